"""The HTML trajectory viewer: real episodes in, one safe self-contained page out, checked in Chromium.

Fixture trajectories come from real MMSearch-v0 episodes (the oracle policy on the built-in sample,
and hostile turns against a backend whose web results are hostile), extended with the fields the
rollout engine adds (policy, image files by content hash, result thumbnails).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from PIL import Image, ImageStat

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from agents.cli import main
from agents.scripted import OraclePolicy
from agents.viewer import load_trajectories, render_viewer, write_viewer
from mmsearch_env.errors import ConfigError, DatasetError
from mmsearch_env.records import EpisodeRecord
from mmsearch_env.search import SearchBackendBase, SearchResponse, SearchResult

PWN = "<script>document.title='PWNED'</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'
IM_END = "<|im_end|>"
BAD_URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "//evil.invalid/x",
]
HOSTILE_TURNS = [
    f"<reason>{PWN} {XSS_IMG}</reason><search><img></search>",
    f"<reason>{IM_END}</script><!--</reason><text_search></script>{PWN}</text_search>",
    f"<reason>{IM_END} <style>body{{display:none}}</style></reason><answer><script>alert(1)</script></answer>",
]


# ---------------------------------------------------------------------------------------------------
# fixture trajectories (the rollout engine writes the production version of this)


def save_image(image: Image.Image, folder: Path) -> str:
    """Save as PNG under its content hash; returns the file name the record stores."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    name = hashlib.sha256(data).hexdigest() + ".png"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / name).exists():
        (folder / name).write_bytes(data)
    return name


def run_episode(env: gym.Env, act, index: int, images: Path, policy: str, split: str | None) -> dict[str, Any]:
    """Play one episode with ``act(observation, info) -> str`` and return the engine-style record."""
    observation, info = env.reset(options={"index": index})
    while True:
        observation, _, terminated, truncated, info = env.step(act(observation, info))
        if terminated or truncated:
            break
    base = env.unwrapped
    record = base.episode_record().to_dict()
    for search, thumbs in zip(record["searches"], base.episode_images()["thumbnails"], strict=True):
        for result, thumb in zip(search["results"], thumbs, strict=True):
            result["thumbnail"] = save_image(thumb, images) if thumb is not None else None
    record.update(
        policy=policy,
        index=index,
        split=split,
        info=json.loads(json.dumps(info, default=str)),
        image=save_image(base.example.image, images),
        latency_s=sum(s["latency_s"] for s in record["searches"]),
    )
    return record


class HostileSearch(SearchBackendBase):
    """A web whose titles, urls and summaries try to break out of the page."""

    name = "hostile"

    def image_search(self, request):
        thumb = Image.new("RGB", (300, 200), (200, 30, 45))
        # a call shows at most MAX_RESULTS (5) results: the two hostile episodes share the bad URLs out
        urls = BAD_URLS[:4] if request.example_id.startswith("hostile-0") else BAD_URLS[4:]
        results = [SearchResult(title=f"{PWN}{XSS_IMG}{IM_END}", url=url, thumbnail=thumb) for url in urls] + [
            SearchResult(title="a fine page", url='https://example.invalid/ok?a=1&b="2"', thumbnail=thumb)
        ]
        return SearchResponse("image_search", tuple(results))

    def text_search(self, request):
        result = SearchResult(
            title=f"</script>{PWN}", url="javascript:document.title='PWNED'", summary=f"{XSS_IMG} </script> {IM_END}"
        )
        return SearchResponse("text_search", (result,))


def hostile_rows() -> list[dict[str, Any]]:
    image = Image.new("RGB", (64, 48), (25, 60, 160))
    return [
        {
            "id": f"hostile-{i}-{XSS_IMG}",
            "question": f"What is this? {PWN} {XSS_IMG} {IM_END}",
            "image": image,
            "answer": f"</script>{PWN}",
            "candidate_answers": [XSS_IMG, IM_END],
            "category": f"cat{i}</script>{PWN}",
            "search_need": "image+text",
        }
        for i in range(2)
    ]


def make_trajectories(folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The sample's test split under the oracle with and without search, plus hostile episodes."""
    images = folder / "images"
    records = []
    env = gym.make("MMSearch-v0", dataset="sample", split="test", search="sample")
    for use_search in (True, False):
        policy = OraclePolicy(env.unwrapped.examples, use_search=use_search)
        for index in range(len(env.unwrapped.examples)):
            records.append(run_episode(env, policy.act, index, images, policy.name, "test"))
    env.close()
    env = gym.make("MMSearch-v0", dataset=hostile_rows(), split=None, search=HostileSearch())
    for index in range(2):
        turns = iter(HOSTILE_TURNS)
        records.append(run_episode(env, lambda o, i, t=turns: next(t), index, images, f"evil{PWN}", None))
    env.close()
    path = folder / "trajectories.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path, records


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    return make_trajectories(tmp_path_factory.mktemp("trajectories"))


@pytest.fixture(scope="module")
def page(trajectories, tmp_path_factory) -> tuple[Path, str]:
    out = write_viewer(trajectories[0], tmp_path_factory.mktemp("viewer") / "viewer.html", title=f"run {PWN}")
    return out, out.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# structure of the page, parsed


class Structure(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parse(html_text: str) -> Structure:
    parser = Structure()
    parser.feed(html_text)
    parser.close()
    return parser


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "p", "table", "thead", "tbody", "tr", "th",
    "td", "nav", "label", "select", "option", "input", "button", "span", "main", "article", "details", "summary",
    "div", "dl", "dt", "dd", "i", "b", "ol", "ul", "li", "pre", "a", "script",
}  # fmt: skip


def test_hostile_text_appears_only_escaped(page):
    _, text = page
    structure = parse(text)
    tags = {tag for tag, _ in structure.tags}
    assert tags <= ALLOWED_TAGS, f"unexpected elements: {tags - ALLOWED_TAGS}"  # no <img>, <style> from data
    assert sum(tag == "script" for tag, _ in structure.tags) == 2  # the facet JSON and the viewer's script
    assert text.count("</script>") == 2 and text.lower().count("<script") == 2
    assert sum(tag == "style" for tag, _ in structure.tags) == 1
    for tag, attrs in structure.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if "href" in attrs:
            assert re.match(r"^https?://", attrs["href"]), attrs["href"]
            assert attrs["rel"] == "noopener noreferrer"
        assert "src" not in attrs  # no element loads anything; images are CSS data URLs
    for raw in (PWN, XSS_IMG, IM_END, "<script>alert(1)</script>", "<!--", "<style>body"):
        assert raw not in text, raw
    # Jinja2's autoescape (markupsafe) writes quotes as numeric references: ' is &#39;, " is &#34;
    for escaped in ("&lt;script&gt;document.title=&#39;PWNED&#39;&lt;/script&gt;", "&lt;|im_end|&gt;",
                    "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"):  # fmt: skip
        assert escaped in text, escaped
    assert "javascript:" in text.lower()  # shown as text ...
    assert not re.search(r"href=\"\s*(javascript|data|vbscript)", text, re.IGNORECASE)  # ... never as a link
    assert 'href="https://example.invalid/ok?a=1&amp;b=&#34;2&#34;"' in text  # attribute-escaped


def test_facet_json_cannot_close_the_script_and_round_trips(page, trajectories):
    _, text = page
    facets_json = parse(text).scripts[0]
    assert "<" not in facets_json and ">" not in facets_json and "&" not in facets_json
    facets = json.loads(facets_json)
    records = trajectories[1]
    assert len(facets) == len(records)
    # episodes are sorted by (policy, index): the hostile policy's name sorts first
    assert facets[1]["category"] == f"cat1</script>{PWN}"  # exact value back, for exact-match filtering
    assert facets[0]["policy"] == f"evil{PWN}" and facets[-1]["policy"] == "oracle-plan"
    assert [f["policy"] for f in facets[2:18]] == ["oracle-no-search"] * 16
    outcomes = [f["outcome"] for f in facets]
    # 16 test questions: the oracle answers all; without search only the 4 answerable from the image
    assert outcomes[-16:] == ["correct"] * 16 and outcomes.count("correct") == 16 + 4
    assert outcomes[:2] == ["wrong", "wrong"]


def test_csp_blocks_network_and_allows_only_the_viewers_script(page):
    _, text = page
    structure = parse(text)
    csp = next(
        a["content"] for t, a in structure.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["img-src"] == "data:"
    digest = base64.b64encode(hashlib.sha256(structure.scripts[1].encode()).digest()).decode()
    assert directives["script-src"] == f"'sha256-{digest}'"  # no 'unsafe-inline' for scripts
    assert not re.search(r"(https?:)?//[^\s\"'<]*\.(js|css|woff2?)\b", text)  # no external resources


def test_episodes_images_and_results_render(page, trajectories):
    _, text = page
    records = trajectories[1]
    assert text.count('<article class="episode') == len(records) == 16 + 16 + 2
    assert text.count("<details open>") == len(records)  # few episodes: all open
    # every question image and thumbnail is embedded once as a data URL and shown through its class
    rules = re.findall(r"\.(i\d+)\{background-image:url\(\"data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)\"\)", text)
    assert len(rules) >= 5 and text.count("data:image/") == len(rules) == len({data for _, data in rules})
    names = {r["image"] for r in records} | {
        x["thumbnail"] for r in records for s in r["searches"] for x in s["results"]
    }
    # at most one rule per file (fewer when files downscale to the same bytes), shown by many episodes
    assert len(rules) <= len(names - {None}) < text.count('<span class="img ')
    for cls, data in rules:
        assert f' {cls}"' in text  # used by some element
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert max(image.size) <= 256
    assert "image missing" not in text
    oracle = records[0]
    assert oracle["ground_truth"] in text and oracle["searches"][0]["results"][0]["title"] in text
    assert "image search" in text and "text search" in text and "ended: <b>answer</b>" in text


def test_missing_optional_fields_and_images_are_tolerated(tmp_path, trajectories):
    record = dict(trajectories[1][0])
    minimal = {"example_id": "m1", "question": "Only a question?", "ground_truth": "g"}  # the required fields
    sparse = {
        **record,
        "reward": None,
        "reward_parts": None,
        "info": None,
        "image": "../../etc/passwd",
        "turns": None,
        "actions": [{"kind": "text_search"}],  # a search that never ran; the image search matches no action
        "searches": [
            {"tool": "image_search", "ok": True, "results": [{"title": "t", "url": "u", "thumbnail": "nope.png"}]}
        ],
        "candidate_answers": None,
        "usage": {"prompt_tokens": 12, "completion_tokens": None},
    }
    # no reward parts: the answer and outcome come from the terminal info
    no_reward = {**record, "reward": None, "reward_parts": None, "policy": "p2"}
    out = write_viewer([minimal, sparse, no_reward], tmp_path / "v.html", images_dir=tmp_path)
    text = out.read_text()
    assert text.count('<article class="episode unknown"') == 2 and text.count('<article class="episode correct"') == 1
    assert f'<dd class="answer correct">{record["info"]["answer"]}</dd>' in text
    assert "Only a question?" in text and "image missing" in text and "prompt_tokens" in text
    assert "background-image" not in text  # the traversal name and the missing thumbnail load nothing
    assert "search not run (episode ended: answer)" in text and "<b>image search</b> · 1 results" in text
    shown_missing = text.count("image missing")  # the header counts the images it could not show
    assert shown_missing >= 2 and f"· {shown_missing} missing</p>" in text


def test_records_objects_and_old_lines_render(tmp_path, trajectories):
    """EpisodeRecord objects render like their dicts; a version-1 line (parts under "reward") is upgraded."""
    records = trajectories[1][:3]
    objects = [EpisodeRecord.from_dict(r) for r in records]
    images = tmp_path / "none"
    assert render_viewer(objects, images_dir=images) == render_viewer(records, images_dir=images)
    old = {k: v for k, v in records[0].items() if k not in ("version", "reward", "reward_parts")}
    old.update(reward={**records[0]["reward_parts"], "reward": 0.25}, reward_total=0.25)
    text = render_viewer([old])
    assert '<span class="total">reward 0.25</span>' in text and "<tr><th>accuracy</th><td>1</td></tr>" in text


def test_episodes_sorted_by_policy_and_index_and_collapsed_rows_show_the_question(trajectories):
    records = trajectories[1][:32]  # both oracle policies; shuffle them as completion order would
    shuffled = records[1::2] + records[::2]
    many = [{**r, "index": r["index"] + 100 * k} for k in range(2) for r in shuffled]  # more than open by default
    many[0] = {**many[0], "question": "Which " + "very " * 40 + "long question?"}
    text = render_viewer(many)
    numbers = re.findall(r'<span class="num">#(\d+)</span>\n<span class="policy">([^<]*)</span>', text)
    assert numbers == sorted(numbers, key=lambda n: (n[1], int(n[0]))) and len(numbers) == len(many)
    assert [int(n) for n, _ in numbers[:3]] == [0, 1, 2]
    assert "<details open>" not in text and text.count("<details>") == len(many)
    previews = re.findall(r'<span class="q">([^<]*)</span>', text)
    assert len(previews) == len(many) and records[0]["question"] in previews
    long = next(p for p in previews if p.startswith("Which very"))
    assert len(long) == 100 and long.endswith("…")


def test_a_line_that_is_not_a_record_names_the_line_and_field(tmp_path, trajectories):
    good = json.dumps(trajectories[1][0])
    cases = [  # (how line 2 is broken, the field the message must name) -- one line each
        ({"turns": "not a list"}, "field 'turns' must be a list, got 'not a list'"),
        ({"info": "not a dict"}, "field 'info' must be a JSON object, got 'not a dict'"),
        ({"reward": "high"}, "field 'reward' must be a number, got 'high'"),
        ({"index": True}, "field 'index' must be an integer, got True"),
        ({"example_id": None}, "required field 'example_id' is missing"),
        ({"actions": [{"content": "x"}]}, "required field 'actions[0].kind' is missing"),
        ({"searches": [{"tool": "t", "ok": True, "results": [{"title": "t", "url": 5}]}]},
         "field 'searches[0].results[0].url' must be a string, got 5"),
        ({"version": 7}, "episode record version 7 is not supported"),
    ]  # fmt: skip
    path = tmp_path / "bad.jsonl"
    for change, message in cases:
        path.write_text(good + "\n" + json.dumps({**trajectories[1][1], **change}) + "\n" + good + "\n")
        with pytest.raises(DatasetError, match=re.escape(f"{path}:2: {message}")):
            write_viewer(path, tmp_path / "v.html")
        with pytest.raises(DatasetError, match=re.escape(f"trajectory 1: {message}")):
            render_viewer([json.loads(line) for line in path.read_text().splitlines()])


def test_page_is_deterministic_and_huge_turns_are_cut(tmp_path, trajectories):
    path, records = trajectories
    images = path.parent / "images"
    assert render_viewer(records, images_dir=images) == render_viewer(records, images_dir=images)
    huge = {**records[0], "turns": ["<reason>" + "x" * 1_000_000 + "</reason><answer>a</answer>"]}
    text = render_viewer([huge])
    assert len(text) < 60_000 and "(980,035 more characters not shown)" in text


def test_max_episodes_and_bad_input(tmp_path, trajectories):
    path, records = trajectories
    text = render_viewer(load_trajectories(path), max_episodes=3, images_dir=path.parent / "images")
    assert text.count('<article class="episode') == 3 and f"first 3 of {len(records)} in the file" in text
    with pytest.raises(ConfigError, match=re.escape("max_episodes must be a positive int or None, got 0")):
        render_viewer(records, max_episodes=0)
    bad = tmp_path / "bad.jsonl"
    line = '{"example_id": "a", "question": "a", "ground_truth": "g"}\n'
    bad.write_text(line + "[1, 2]\n")
    with pytest.raises(DatasetError, match=re.escape(f"{bad}:2: an episode record must be a JSON object")):
        load_trajectories(bad)
    bad.write_text(line + "{oops\n" + line)
    with pytest.raises(DatasetError, match=re.escape(f"{bad}:2: not a JSON trajectory line")):
        load_trajectories(bad)
    bad.write_text(line + '{"example_id": "b", "question": "b", "tur')  # an interrupted writer's last line
    with pytest.warns(UserWarning, match="truncated last line"):
        assert [r.question for r in load_trajectories(bad)] == ["a"]
    with pytest.raises(
        DatasetError, match=re.escape("trajectory 1: expected a JSON object (an episode record), got str")
    ):
        render_viewer([json.loads(line), "oops"])
    with pytest.raises(DatasetError, match="does not exist"):
        write_viewer(tmp_path / "missing.jsonl", tmp_path / "v.html")


def test_cli_view(tmp_path, trajectories, capsys):
    path, records = trajectories
    out = tmp_path / "sub" / "viewer.html"
    assert main(["view", str(path), "--out", str(out), "--max-episodes", "4"]) == 0
    assert out.read_text().count('<article class="episode') == 4
    assert str(out) in capsys.readouterr().out
    assert main(["view", str(tmp_path / "none.jsonl"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# headless Chromium: the page runs, filters, and the injected scripts do not


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("MMSEARCH_REQUIRE_SERVICES") == "1":
            pytest.fail("chromium is not installed but MMSEARCH_REQUIRE_SERVICES=1 (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium); the viewer's browser test needs it")
    return found


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # A private profile folder: other Chromium processes on the machine must not share our state.
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_chromium_control_unescaped_injection_would_run(tmp_path):
    """The PWNED marker works: the same script, unescaped and without our CSP, does change the title."""
    control = tmp_path / "control.html"
    control.write_text(f"<!DOCTYPE html><html><head><title>safe</title></head><body>{PWN}</body></html>")
    dom = run_chromium(tmp_path, "--dump-dom", control.as_uri()).stdout
    assert "<title>PWNED</title>" in dom


def test_chromium_renders_filters_and_blocks_injection(page, trajectories, tmp_path):
    out, _ = page
    records = trajectories[1]
    result = run_chromium(tmp_path, "--dump-dom", out.resolve().as_uri())
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'data-viewer-ready="{len(records)}"' in dom  # the viewer's script ran under its own CSP
    assert f"{len(records)} of {len(records)} episodes shown" in dom
    assert dom.count('<article class="episode') == len(records)
    assert "PWNED</title>" not in dom and "<title>run &lt;script&gt;" in dom
    assert records[0]["ground_truth"] in dom
    assert "Refused to execute inline script" not in result.stderr  # nothing was even attempted
    assert "<img" not in dom  # the XSS payload never became an element

    # The filters, preset from the URL fragment: without search, 16 - 4 answers are wrong.
    uri = out.resolve().as_uri() + "#policy=oracle-no-search&outcome=wrong"
    dom = run_chromium(tmp_path, "--dump-dom", uri).stdout
    assert f"12 of {len(records)} episodes shown" in dom
    assert dom.count('<article class="episode wrong" id="ep-') == 12 + 2
    assert len(re.findall(r'<article class="episode [a-z]+" id="ep-\d+" hidden', dom)) == len(records) - 12
    dom = run_chromium(tmp_path, "--dump-dom", out.resolve().as_uri() + "#q=SAMPLE-MAROVIA-IMAGE-TEXT").stdout
    assert f"2 of {len(records)} episodes shown" in dom  # the question under both policies, any case
    hostile = urllib.parse.urlencode({"category": f"cat1</script>{PWN}"})  # exact match on an escaped value
    dom = run_chromium(tmp_path, "--dump-dom", f"{out.resolve().as_uri()}#{hostile}").stdout
    assert f"1 of {len(records)} episodes shown" in dom and "PWNED</title>" not in dom

    shot = tmp_path / "viewer.png"
    result = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", out.resolve().as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        rgb = image.convert("RGB")
        stddev = ImageStat.Stat(rgb).stddev
        assert min(stddev) > 20, stddev  # not a blank page
        assert len(rgb.getcolors(1 << 20)) > 500  # text, badges and flag images, not two flat colours
        # The first question image (a flag, drawn in saturated colours) is on screen.
        pixels = rgb.resize((320, 500)).get_flattened_data()
        assert sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 120) > 200


def test_renders_the_rollout_engines_own_trajectory_file(tmp_path):
    """The engine (agents.rollout) and the viewer agree on the format: thumbnails and reward parts show."""
    from agents.rollout import rollout

    base = gym.make("MMSearch-v0", dataset="sample", search="sample", split="test").unwrapped
    policy = OraclePolicy(base.examples, use_search=True)
    path = tmp_path / "run" / "traj.jsonl"
    rollout(policy, range(4), env_config={"dataset": "sample", "split": "test"}, out=path, progress=False)
    html_text = write_viewer(path, tmp_path / "viewer.html").read_text(encoding="utf-8")
    records = load_trajectories(path)
    thumbs = {r.thumbnail for rec in records for s in rec.searches for r in s.results if r.thumbnail}
    assert thumbs  # image searches saved thumbnails, and each one is embedded in the page
    assert html_text.count("data:image/") >= len(thumbs) + 1
    assert "search penalty" in html_text and "0.91" in html_text  # the reward breakdown, not a bare total
