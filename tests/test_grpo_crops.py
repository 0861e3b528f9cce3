"""GRPO through TRL's tool loop with region image search: a scripted tiny VLM names a box, the tool
runs the crop, the region image and the thumbnails reach the forward pass, and the reward is the env's."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from agents.grpo import build_trainer, cpu_preset, make_train_dataset
from agents.hf_policy import load_processing_class
from agents.scripted_model import plan_script, scripted_vlm
from agents.tiny_vlm import build_tiny_vlm
from mmsearch_env.data import load_dataset
from mmsearch_env.protocol import get_protocol
from mmsearch_env.regions import parse_box
from mmsearch_env.reward import score_trajectory

IMAGE_ID = "sample-arvenia-image"


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_a_crop_tool_call_feeds_the_region_and_scores_like_the_env(tmp_path, protocol):
    example = {e.id: e for e in load_dataset("sample", None)}[IMAGE_ID]
    example.image.save(tmp_path / "q.png")
    row = {"id": example.id, "question": example.question, "image": "q.png", "answer": example.answer}
    (tmp_path / "q.jsonl").write_text(json.dumps({**row, "search_need": example.search_need}) + "\n")
    p = get_protocol(protocol, crops=True)
    crop = [
        p.format_action("image_search", reason="The flag.", box=parse_box("0,0,0.5,0.5")),
        p.format_action("answer", example.answer),
    ]
    base = build_tiny_vlm()
    model = scripted_vlm(base, plan_script({example.question: [crop]}), seed=1)
    config = cpu_preset(
        str(tmp_path / "run"), dataset=str(tmp_path / "q.jsonl"), search="sample", split=None, protocol=protocol,
        image_crops=True, warm_start_epochs=0, per_device_train_batch_size=2, num_generations=2, max_steps=1,
        save_steps=1000, report_to=[], metrics_plot=False,
    )  # fmt: skip
    trainer = build_trainer(config, model=model, processor=load_processing_class(base))
    rows = make_train_dataset(trainer.args.env_kwargs())
    out = trainer._generate_and_score_completions([rows[0], rows[0]])
    reward = trainer.mmsearch_reward
    for k in range(2):
        ids = out["completion_ids"][k][out["completion_mask"][k].bool()]
        turns = reward.turns(ids.tolist())
        assert turns == crop
        breakdown, info = reward.last[k]
        assert info["image_regions"] and info["image_regions"][0][:2] == [0, 0]
        expected = score_trajectory(crop, example.answer, example.candidate_answers, protocol=p)
        assert breakdown == expected and breakdown.reward == 0.91
    # per rollout: the question image, the region searched, five thumbnails
    assert sum(out["num_images"]) == 2 * (1 + 1 + 5)
