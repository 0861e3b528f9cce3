"""The question set scores common correct answers as correct, asks nothing the picture answers under a
search label, and never asks to tell near-identical pictures apart."""

from __future__ import annotations

import pytest

from mmsearch_env.corpus.questions import fair_aliases, load_question_rows
from mmsearch_env.reward import exact_match


@pytest.fixture(scope="module")
def rows():
    return load_question_rows()


def score(row: dict, answer: str) -> float:
    return exact_match(answer, row["answer"], row["candidate_answers"])


@pytest.mark.parametrize(
    ("category", "answer", "facts", "accepted"),
    [
        ("country-currency", "Icelandic króna", {"currency": [{"name": "Icelandic króna", "code": "ISK"}]},
         ["Icelandic krona", "krona", "ISK"]),
        ("country-currency", "Bhutanese ngultrum",
         {"currency": [{"name": "Bhutanese ngultrum", "code": "BTN"}, {"name": "Indian rupee", "code": "INR"}]},
         ["Indian rupee", "ngultrum"]),
        ("country-currency", "Netherlands Antillean guilder",
         {"currency": [{"name": "Netherlands Antillean guilder", "code": "ANG"}]}, ["Caribbean guilder"]),
        ("country-demonym", "Ni-Vanuatu", {}, ["Ni Vanuatu"]),
        ("country-demonym", "Kenyan", {}, ["Kenyans"]),
        ("country-subregion", "Southern Europe", {"region": "Europe"}, ["Europe"]),
        ("country-capital", "São Tomé", {}, ["Sao Tome"]),
        ("country-language", "French", {"languages": ["French", "Swiss German"]}, ["German"]),
        ("emoji-travel-places", "glowing star", {"tags": "glittery, glow, shining, sparkle, star"}, ["star"]),
        ("emoji-objects", "headphone", {"tags": "earbud, sound"}, ["headphones"]),
        ("emoji-objects", "locked", {"tags": "closed, lock, private"}, ["lock", "padlock"]),
        ("emoji-animals-nature", "black bird", {"tags": "bird, crow"}, ["blackbird", "bird", "crow"]),
        ("element-period", "4", {}, ["period 4"]),
        ("country-subregion", "South-Eastern Asia", {"region": "Asia"}, ["Southeast Asia", "Asia"]),
        ("country-demonym", "Uzbekistani", {}, ["Uzbek", "Uzbekistanis"]),
        ("country-demonym", "Solomon Islander", {}, ["Solomon Islanders"]),
        ("brand-logo", "Hacker Noon", {}, ["HackerNoon"]),
        ("brand-logo", "Apache NetBeans IDE", {}, ["NetBeans", "Apache NetBeans"]),
        ("brand-logo", "Draugiem.lv", {}, ["Draugiem"]),
        ("wiki-capital_of", "Bosnia and Herzegovina", {}, ["Bosnia"]),
    ],
)  # fmt: skip
def test_common_correct_forms_are_accepted(category, answer, facts, accepted):
    aliases = fair_aliases({"category": category, "answer": answer, "aliases": []}, facts)
    for form in accepted:
        assert exact_match(form, answer, aliases) == 1.0, (form, aliases)
    assert exact_match("Atlantis", answer, aliases) == 0.0


def test_shipped_questions_carry_the_fair_forms(rows):
    by_entity = {(r["entity"], r["category"]): r for r in rows}
    iceland = by_entity.get(("country/isl", "country-currency"))
    if iceland is not None:
        assert score(iceland, "krona") == 1.0
    subregions = [r for r in rows if r["category"] == "country-subregion" and r["answer"].endswith("Europe")]
    assert subregions and all(score(r, "Europe") == 1.0 for r in subregions)


def test_labels_and_near_identical_pictures(rows):
    # the tile prints the atomic number: no search is needed to read it
    assert {r["search_need"] for r in rows if r["category"] == "element-atomic_number"} == {"none"}
    asked = {r["entity"] for r in rows if r["category"] in ("country-flag",)}
    assert not {"country/tcd", "country/rou", "country/idn", "country/mco"} & asked  # look alike
    assert "country/bra" in asked
    assert rows[0]["id"] == "corpus-00000" and rows[0]["answer"] == "Aruba"  # ids are stable
    # no mass-number "atomic weights" (polonium's 209): only standard atomic weights are asked
    assert not [r for r in rows if r["category"] == "element-atomic_weight" and r["entity"] == "element/polonium"]


def test_test_split_uses_phrasings_never_seen_in_training(rows):
    seen = {r["question"] for r in rows if r["split"] != "test"}
    test = [r for r in rows if r["split"] == "test"]
    assert test and not {r["question"] for r in test} & seen
    # the entity is still never named when the picture has to identify it
    flag = next(r for r in test if r["category"] == "country-flag")
    assert flag["question"] in ("Whose national flag is pictured here?", "Identify the nation that flies this flag.")


def test_wordmark_logos_are_labelled_as_answered_by_the_picture(rows):
    from mmsearch_env.corpus import DATA_DIR
    from mmsearch_env.corpus.wordmarks import load_logo_text, spells_name

    text = load_logo_text(DATA_DIR)
    logos = [r for r in rows if r["category"] == "brand-logo"]
    wordmarks = [r for r in logos if r["search_need"] == "none"]
    assert 0.05 * len(logos) < len(wordmarks) < 0.3 * len(logos)
    assert all(spells_name(text.get(r["entity"], ""), r["answer"]) for r in wordmarks)
    assert not any(spells_name(text.get(r["entity"], ""), r["answer"]) for r in logos if r["search_need"] == "image")


def test_no_accepted_form_is_blank():
    aliases = fair_aliases({"category": "country-outline", "answer": "Uzbekistan", "aliases": ["Ўзбекистон"]}, {})
    assert aliases == ["Ўзбекистон"]  # its accent-free fold is empty, so it is not listed


def test_wikipedia_questions_ask_facts_the_page_states(rows):
    from mmsearch_env.corpus import load_corpus

    wiki = [r for r in rows if r["category"].startswith("wiki-")]
    assert {r["category"] for r in wiki} == {"wiki-born", "wiki-died", "wiki-capital_of"}
    assert {r["split"] for r in wiki} == {"train", "validation", "test"} and {r["search_need"] for r in wiki} == {
        "text"
    }
    corpus = load_corpus()
    for r in wiki[::50]:
        page = corpus.page(r["entity"])
        assert r["answer"] in page.text and page.title in r["question"], r
    # numbered after every other question, so adding them moved no existing id
    first = min(int(r["id"].split("-")[1]) for r in wiki)
    assert all(int(r["id"].split("-")[1]) < first for r in rows if not r["category"].startswith("wiki-"))
