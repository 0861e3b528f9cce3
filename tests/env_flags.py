"""One command-line value per EnvConfig field, and the value it must parse to (eval, curate and training
flags are all checked against this table; a new env setting needs a row here)."""

from __future__ import annotations

ENV_FLAG_VALUES = {
    "dataset": ("sample", "sample"),
    "split": ("validation", "validation"),
    "search": ("sample", "sample"),
    "search_options": ('{"max_results": 3}', {"max_results": 3}),
    "search_timeout": ("5", 5.0),
    "thumbnail_size": ("64", 64),
    "protocol": ("tool_calls", "tool_calls"),
    "prompts": ("prompts.json", "prompts.json"),
    "image_position": ("last", "last"),
    "max_turns": ("4", 4),
    "max_image_searches": ("2", 2),
    "max_text_searches": ("1", 1),
    "search_penalty": ("0.2", 0.2),
    "format_weight": ("0.3", 0.3),
    "max_action_chars": ("4096", 4096),
    "render_mode": ("ansi", "ansi"),
    "image_crops": ("true", True),
    "format_image_searches": ("2", 2),
    "format_text_searches": ("3", 3),
    "penalty_mode": ("per_call", "per_call"),
    "question_scenes": ("screenshot", "screenshot"),
    "scene_seed": ("7", 7),
}
