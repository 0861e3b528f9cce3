"""Time per GRPO step: our env adapter vs TRL's plain built-in tool loop, same model and budget.

    python benchmarks/grpo_step.py             # writes benchmarks/results/grpo_step.{json,md}
    python benchmarks/grpo_step.py --steps 12 --rounds 3

Both trainers are TRL ``GRPOTrainer`` on the tiny VLM with the same scripted generations (every
rollout: image search → text search → answer, JSON tool calls), the same question (one sample
question, so stateless tools can search its image), the same search engine, token-identical tool
results, batch, group size and completion budget. They differ only in what wraps the tools:

* **env adapter** — ``environment_factory`` (:class:`agents.grpo.ToolCallsToolEnv`): each call steps
  MMSearch-v0 (limits, recording), and the reward replays the turns through the env;
* **plain tools** — ``tools=[image_search, text_search]``: stateless functions that call the search
  engine and render its results, and the stateless TRL reward :class:`mmsearch_env.reward.OutcomeReward`.

Timing is the CPU time of this process per training step (all threads; torch runs on one thread
here), because on a shared machine wall time mostly measures the other processes; wall time is
reported too. The runs alternate (adapter, plain, adapter, …); per round, each run's median step
(first step dropped: warm-up) gives one ratio, and the reported ratio is the median of the per-round
ratios. Aim ≤ 1.10.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from transformers import TrainerCallback
from trl import GRPOTrainer

from agents.grpo import build_trainer, cpu_preset, make_train_dataset, prepare_processing_class
from agents.hf_policy import load_processing_class
from agents.scripted_model import plan_script, scripted_vlm
from agents.tiny_vlm import build_tiny_vlm
from mmsearch_env.env import MMSearchEnv
from mmsearch_env.prompts import render_tool_result
from mmsearch_env.protocol import get_protocol
from mmsearch_env.reward import OutcomeReward
from mmsearch_env.search import ImageSearchRequest, TextSearchRequest, call_search

RESULTS = Path(__file__).parent / "results"
PROTOCOL = get_protocol("tool_calls")
WALL: dict[str, list[float]] = {}
TOKENS: dict[str, set[float]] = {}  # model tokens per completion seen in each arm (must match: same work)


class StepTimer(TrainerCallback):
    """CPU time (this process, all threads) and wall time of each training step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.wall: list[float] = []
        self._start = (0.0, 0.0)

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.process_time(), time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.process_time() - self._start[0])
        self.wall.append(time.perf_counter() - self._start[1])


QUESTION_ID = "sample-arvenia-image-text"


def write_dataset(folder: Path) -> str:
    """The one benchmark question as a JSONL dataset (image as a PNG beside it)."""
    (example,) = [
        e for e in MMSearchEnv(dataset="sample", split=None, search="disabled").examples if e.id == QUESTION_ID
    ]
    example.image.save(folder / "question.png")
    row = {"id": example.id, "question": example.question, "image": "question.png", "answer": example.answer}
    path = folder / "question.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return str(path)


def script():
    turns = [
        PROTOCOL.format_action("image_search", reason="Unknown flag."),
        PROTOCOL.format_action("text_search", "capital of the country", reason="Need a fact."),
        PROTOCOL.format_action("answer", "Velmont", reason="Found it."),
    ]
    (example,) = [
        e for e in MMSearchEnv(dataset="sample", split=None, search="disabled").examples if e.id == QUESTION_ID
    ]
    return plan_script({example.question: turns})


def plain_tools(env: MMSearchEnv):
    """Stateless tools: the same engine and rendering as the env, no episode state.

    The next-step hints match what the env says on the scripted path (after the image search a text
    search is still allowed; after the text search the next turn is the last), so results are
    token-identical to the adapter's.
    """
    example = env.examples[0]

    def render(response, query=None):
        message = render_tool_result(
            env.prompts, PROTOCOL, response, question=example.question, query=query,
            can_image_search=False, can_text_search=response.tool == "image_search",
            thumbnail_size=env.thumbnail_size,
        )  # fmt: skip
        return message["content"]

    def image_search() -> list:
        """Reverse image search of the question's image.

        Returns:
            Up to 5 web pages showing a similar image, each with a thumbnail and a title.
        """
        request = ImageSearchRequest(image=example.image, example_id=example.id)
        return render(call_search(env.search, "image_search", request))

    def text_search(query: str) -> list:
        """Web search for a text query.

        Args:
            query: What to search for.

        Returns:
            Up to 5 web pages, each with its link and a short summary.
        """
        request = TextSearchRequest(query=query, question=example.question, example_id=example.id)
        return render(call_search(env.search, "text_search", request), query)

    return [image_search, text_search]


def save_step_timing(
    name: str,
    meta: dict,
    times: dict[str, list[float]],
    wall: dict[str, list[float]],
    ratios: list[float],
) -> dict:
    """Write ``RESULTS/<name>.json`` of an alternating two-run step timing and return it: per run the
    median step's CPU and wall time, the median of the per-round ratios, and every step's time."""
    result = {
        "meta": meta,
        "median_step_cpu_s": {k: statistics.median(v) for k, v in times.items()},
        "median_step_wall_s": {k: statistics.median(v) for k, v in wall.items()},
        "ratio": statistics.median(ratios),
        "round_ratios": ratios,
        "step_times_s": times,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def run(kind: str, steps: int, out: Path, base: Path) -> list[float]:
    settings = dict(
        dataset=write_dataset(out), split=None, protocol="tool_calls", warm_start_epochs=0, max_steps=steps,
        per_device_train_batch_size=8, num_generations=8, max_completion_length=1024, report_to=[],
        metrics_plot=False, save_strategy="no", logging_steps=1, learning_rate=1e-4,
    )  # fmt: skip
    config = cpu_preset(str(out / kind.replace(" ", "-")), **settings)
    model = scripted_vlm(base, script(), seed=0)
    processor = load_processing_class(base)
    timer = StepTimer()
    if kind == "env adapter":
        trainer = build_trainer(config, model=model, processor=processor, callbacks=[timer])
    else:
        from peft import LoraConfig

        prepare_processing_class(processor, "tool_calls")
        env = MMSearchEnv(**config.env_kwargs())
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[OutcomeReward(protocol="tool_calls")],
            args=config,
            train_dataset=make_train_dataset(config.env_kwargs()),
            processing_class=processor,
            peft_config=LoraConfig(
                r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=config.lora_target_modules
            ),
            tools=plain_tools(env),
            callbacks=[timer],
        )
    trainer.train()
    lengths = {h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h}
    TOKENS.setdefault(kind, set()).update(lengths)
    WALL.setdefault(kind, []).extend(timer.wall[1:])
    return timer.times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="GRPO steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating (adapter, plain) run pairs")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # one thread: CPU time is then the step's work, not thread spinning
    base = build_tiny_vlm()
    times: dict[str, list[float]] = {"env adapter": [], "plain tools": []}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            round_medians = {}
            for kind in times:
                steps = run(kind, args.steps, Path(tmp), base)
                times[kind] += steps
                round_medians[kind] = statistics.median(steps)
            ratios.append(round_medians["env adapter"] / round_medians["plain tools"])
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "device": "cpu",
        "steps_per_run": args.steps,
        "rounds": args.rounds,
        "rollouts_per_step": 8,
        "group_size": 8,
        "turns_per_rollout": 3,
    }
    if TOKENS["env adapter"] != TOKENS["plain tools"]:
        raise RuntimeError(f"the two arms did different work: completion lengths {TOKENS}")
    meta["model_tokens_per_completion"] = sorted(TOKENS["env adapter"])
    saved = save_step_timing("grpo_step", meta, times, WALL, ratios)
    medians, wall, ratio = saved["median_step_cpu_s"], saved["median_step_wall_s"], saved["ratio"]
    lines = [
        "# GRPO step time: env adapter vs TRL's plain tool loop",
        "",
        f"`python benchmarks/grpo_step.py --steps {args.steps} --rounds {args.rounds}` · tiny VLM · CPU "
        f"({meta['cpus']} cores) · Python {meta['python']} · 8 rollouts/step (one group of 8), each image search → "
        "text search → answer (scripted generations)",
        "",
        "| tools wrapped by | median step, CPU time (s) | median step, wall (s) | steps timed |",
        "|---|---:|---:|---:|",
    ]
    for kind, value in medians.items():
        lines.append(f"| {kind} | {value:.3f} | {wall[kind]:.3f} | {len(times[kind])} |")
    lines += [
        "",
        f"Ratio env adapter / plain tools, CPU time (median of per-round ratios): **{ratio:.3f}×** (aim ≤ 1.10×); "
        f"per round: {', '.join(f'{r:.3f}' for r in ratios)}.",
    ]
    (RESULTS / "grpo_step.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
