"""Region image search on the agent side: the TRL tool adapter, the tags chat template, the scripted
oracle's true box, evaluation's crop counts and the viewer's boxes."""

from __future__ import annotations

import inspect
from typing import ClassVar

import jinja2
import pytest
from jinja2.ext import Extension
from PIL import Image

from agents.evaluate import EvalReport, resolve_policy
from agents.grpo.processing import tags_chat_template
from agents.grpo.tool_env import TagsCropToolEnv, TagsToolEnv, ToolCallsCropToolEnv, ToolCallsToolEnv, env_factory
from agents.metrics import policy_metrics
from agents.scripted import OraclePolicy
from agents.viewer import render_viewer
from mmsearch_env.env import MMSearchEnv

SAMPLE = {"dataset": "sample", "search": "sample"}


def test_the_paper_setting_keeps_the_paper_tools():
    assert env_factory(SAMPLE).cls is TagsToolEnv
    assert env_factory({**SAMPLE, "protocol": "tool_calls"}).cls is ToolCallsToolEnv
    assert list(inspect.signature(ToolCallsToolEnv.image_search).parameters) == ["self"]
    assert env_factory({**SAMPLE, "protocol": "tool_calls", "image_crops": True}).cls is ToolCallsCropToolEnv
    assert env_factory({**SAMPLE, "image_crops": True}).cls is TagsCropToolEnv
    for cls, tools in (
        (TagsCropToolEnv, {"search", "text_search"}),
        (ToolCallsCropToolEnv, {"image_search", "text_search"}),
    ):
        public = {n for n, _ in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}
        assert public == tools | {"reset"}, cls  # TRL makes every public method a tool
    assert "box" in inspect.signature(ToolCallsCropToolEnv.image_search).parameters


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_the_tool_adapter_searches_a_region_and_scores_it(protocol):
    tool_env = env_factory({**SAMPLE, "protocol": protocol, "image_crops": True})()
    tool_env.reset(example_id=tool_env.env.examples[0].id)
    search = tool_env.search if protocol == "tags" else tool_env.image_search
    content = search(box=[0, 0, 0.5, 0.5])
    assert isinstance(content, list) and "region 0,0," in content[0]["text"] and content[1]["type"] == "image"
    assert tool_env.episode.last_info["image_regions"][0][:2] == [0, 0]
    tool_env.episode.close()


def test_the_tags_tool_reads_a_box_from_the_parsed_query():
    tool_env = env_factory({**SAMPLE, "image_crops": True})()
    tool_env.reset(example_id=tool_env.env.examples[0].id)
    content = tool_env.search(query="<img>0,0,0.5,0.5")
    assert "region 0,0," in content[0]["text"]
    tool_env.reset(example_id=tool_env.env.examples[0].id)
    tool_env.search(query="<img>")
    assert tool_env.episode.last_info["image_regions"] == [None]


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
@pytest.mark.parametrize("box", ["0,0,nan,1", [1, 2, 3], [0.5, 0.5, 0.1, 0.1]])
def test_a_bad_box_from_a_tool_call_ends_the_episode_as_malformed(protocol, box):
    tool_env = env_factory({**SAMPLE, "protocol": protocol, "image_crops": True})()
    tool_env.reset(example_id=tool_env.env.examples[0].id)
    search = tool_env.search if protocol == "tags" else tool_env.image_search
    assert search(box=box) == "No search was run (malformed). Give your final answer."
    assert tool_env.episode.last_info["action_error"].startswith("the image search box is malformed")


class _Generation(Extension):
    """TRL's {% generation %} marker, as a no-op (the mask is not what this test checks)."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


@pytest.mark.parametrize(
    ("arguments", "written"),
    [
        ({}, "<search><img></search>"),
        ({"box": [0.1, 0.2, 0.3, 0.4]}, "<search><img>0.1,0.2,0.3,0.4</search>"),
        ({"box": "1,2,30,40"}, "<search><img>1,2,30,40</search>"),
        ({"query": "<img>"}, "<search><img></search>"),  # what the tags response parser produces
        ({"query": "<img>0,0,0.5,0.5"}, "<search><img>0,0,0.5,0.5</search>"),
        ({"query": "junk"}, "<search><img></search>"),
    ],
)
def test_the_tags_chat_template_writes_the_box_back_as_the_env_reads_it(arguments, written):
    template = jinja2.Environment(extensions=[_Generation, "jinja2.ext.loopcontrols"]).from_string(tags_chat_template())
    call = {"function": {"name": "search", "arguments": arguments}}
    text = template.render(messages=[{"role": "assistant", "content": "<reason>r</reason>", "tool_calls": [call]}])
    assert f"<reason>r</reason>{written}<|im_end|>" in text


def _play(env, policy, n):
    records = []
    for index in range(n):
        obs, info = env.reset(options={"index": index})
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            if terminated or truncated:
                break
        record = env.episode_record()
        record.info = {k: v for k, v in info.items() if k != "reward_parts"}
        record.index = index
        records.append(record)
    return records


def test_the_oracle_searches_the_true_box_and_evaluation_counts_it():
    env = MMSearchEnv(**SAMPLE, split="test", image_crops=True, question_scenes="screenshot")
    oracle = resolve_policy("oracle:box", examples=env.examples, protocol=env.protocol)
    assert oracle.name == "oracle-true-box"
    records = _play(env, oracle, 12)
    image_episodes = [r for r in records if r.image_searches]
    assert image_episodes, "the sample's test split has image questions"
    for record in image_episodes:
        truth = env.examples[record.index].metadata["true_box"]
        assert record.info["image_regions"][0] == truth
    row = {"policy": oracle.name, **policy_metrics(records, env.max_searches_per_episode)}
    assert row["region_searches"] == {
        "image_searches": len(image_episodes),
        "region_searches": len(image_episodes),
        "episodes_with_region": len(image_episodes),
    }
    report = EvalReport(
        rows=[row], config={"dataset": "sample", "split": "test", "episodes": 12, "max_searches_per_episode": 2}
    )
    assert f"| oracle-true-box | {len(image_episodes)} | {len(image_episodes)} |" in report.to_markdown()
    plain = MMSearchEnv(**SAMPLE, split="test")
    assert policy_metrics(_play(plain, OraclePolicy(plain.examples), 3), 2)["region_searches"] is None


def test_the_viewer_draws_the_searched_boxes(tmp_path):
    env = MMSearchEnv(**SAMPLE, split="test", image_crops=True, question_scenes="screenshot")
    (record,) = _play(env, OraclePolicy(env.examples, use_true_box=True), 1)
    record.info = {"image_size": [640, 480], "image_regions": [[64, 48, 320, 240], None, ["x", 1, 2, 3]]}
    record.image = "missing.png"
    html = render_viewer([record])
    assert html.count('class="rbox"') == 0  # no image file: nothing to draw on
    Image.new("RGB", (640, 480), "white").save(tmp_path / "q.png")
    record.image = "q.png"
    html = render_viewer([record], images_dir=tmp_path)
    assert html.count('class="rbox"') == 1
    assert 'style="left:10.00%;top:10.00%;width:40.00%;height:40.00%"' in html


def test_each_region_search_shows_the_region_it_searched(tmp_path):
    env = MMSearchEnv(**SAMPLE, split="test", image_crops=True, question_scenes="screenshot")
    (record,) = _play(env, OraclePolicy(env.examples, use_true_box=True), 1)
    assert [s.tool for s in record.searches][:1] == ["image_search"]
    Image.new("RGB", (640, 480), "white").save(tmp_path / "q.png")
    record.image = "q.png"
    record.info = {"image_size": [640, 480], "image_regions": [[64, 48, 320, 240]]}
    html = render_viewer([record], images_dir=tmp_path)
    # the 256x192 region at 96 px: the whole 640x480 image scaled by 0.375, shifted to the region
    crop = "width:96px;height:72px;background-size:240.0px 180.0px;background-position:-24.0px -18.0px"
    assert html.count('aria-label="region searched"') == 1 and crop in html
    record.info = {"image_size": [640, 480], "image_regions": [None]}  # the whole image: no crop shown
    assert 'aria-label="region searched"' not in render_viewer([record], images_dir=tmp_path)
    record.info = {"image_size": [640, 480], "image_regions": [[64, 48, 320, 240]]}
    record.image = "missing.png"  # nothing to cut the region from
    assert 'aria-label="region searched"' not in render_viewer([record], images_dir=tmp_path)
