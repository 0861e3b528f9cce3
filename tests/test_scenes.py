"""Screenshot scenes: seeded, lazy, the true region really holds the question's picture, and the
structured-action wrapper can search it."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch_env.data import load_dataset, screenshot_scenes
from mmsearch_env.env import MMSearchEnv
from mmsearch_env.errors import ConfigError, InvalidActionError
from mmsearch_env.wrappers import StructuredActions


@pytest.fixture(scope="module")
def base():
    return load_dataset("sample", "test")


def test_scenes_are_seeded_and_keep_the_questions(base):
    a, b, c = screenshot_scenes(base, seed=1), screenshot_scenes(base, seed=1), screenshot_scenes(base, seed=2)
    assert a.ids == tuple(e.id for e in base) and len(a) == len(base)
    for i in range(3):
        assert a[i].image.tobytes() == b[i].image.tobytes()
        assert (a[i].question, a[i].answer, a[i].search_need) == (base[i].question, base[i].answer, base[i].search_need)
    assert any(a[i].metadata["true_box"] != c[i].metadata["true_box"] for i in range(len(base)))
    assert a[-1].id == base[-1].id and [e.id for e in a[1:3]] == [e.id for e in base[1:3]]
    with pytest.raises(IndexError):
        a[len(base)]


def test_the_true_box_holds_the_question_picture_and_not_a_distractor(base):
    scenes = screenshot_scenes(base, seed=0)
    for i in range(len(base)):
        example = scenes[i]
        left, top, right, bottom = example.metadata["true_box"]
        card = np.asarray(example.image.crop((left, top, right, bottom)), dtype=np.float32)
        picture = base[i].image.convert("RGB")
        shown = picture.copy()
        shown.thumbnail((right - left - 8, bottom - top - 8))
        x, y = (right - left - shown.width) // 2, (bottom - top - shown.height) // 2
        inner = card[y : y + shown.height, x : x + shown.width]
        assert np.abs(inner - np.asarray(shown, dtype=np.float32)).mean() < 1.0, example.id
        assert example.id not in example.metadata["distractors"] and len(example.metadata["distractors"]) == 3


def test_scenes_need_distractors():
    with pytest.raises(ConfigError, match="at least 2 questions"):
        screenshot_scenes(load_dataset("sample", "test")[:1])


def test_the_env_shows_scenes_and_structured_actions_search_a_box():
    env = StructuredActions(
        MMSearchEnv(dataset="sample", search="sample", question_scenes="screenshot", image_crops=True)
    )
    obs, info = env.reset(seed=0)
    assert obs["image"].size == (640, 480) == tuple(info["image_size"])
    box = env.unwrapped.example.metadata["true_box"]
    _, _, terminated, _, info = env.step({"type": "image_search", "box": box})
    assert not terminated and info["image_regions"] == [box]
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="box cannot be read"):
        env.step({"type": "image_search", "box": "1,2"})


def test_every_env_of_a_pool_shows_the_same_scenes_never_scenes_of_scenes(base):
    from agents.pool import make_env_pool

    once = screenshot_scenes(base, seed=3)
    assert screenshot_scenes(once, seed=3).base is base  # wrapping again draws from the plain pictures
    config = {"dataset": "sample", "split": "test", "question_scenes": "screenshot", "image_crops": True}
    alone = MMSearchEnv(**config)
    with make_env_pool(config, 3) as pool:  # the pool hands its first env's questions to the others
        for env in pool:
            for i in (0, 1, 2):
                assert np.array_equal(np.asarray(env.unwrapped.examples[i].image), np.asarray(alone.examples[i].image))
