"""Text search over the corpus forgives users: other names, misspellings, synonyms, short symbols, and
summaries that keep the answering fact sentence and split sentences correctly."""

from __future__ import annotations

import pytest

from mmsearch_env.search import TextSearchRequest, make_search
from mmsearch_env.search.local import split_sentences, summarize


@pytest.fixture(scope="module")
def search():
    return make_search("corpus")


def top_titles(search, query: str) -> list[str]:
    return [r.title for r in search.text_search(TextSearchRequest(query)).results]


@pytest.mark.parametrize(
    ("query", "title", "answer"),
    [
        ("Turkey currency", "Türkiye", "Turkish lira"),  # an other name that is also a common word
        ("capital of Burma", "Myanmar", "Naypyidaw"),  # a former name
        ("Deutschland phone code", "Germany", "+49"),  # an endonym, a synonym for calling code
        ("DRC money", "DR Congo", "Congolese franc"),  # an abbreviation from the facts' aliases
        ("capitol of Kazakstan", "Kazakhstan", "Astana"),  # two misspellings
        ("nationality of people from Suriname", "Suriname", "Surinamer"),  # demonym fact sentence kept
    ],
)
def test_free_form_queries_find_the_page_and_its_fact(search, query, title, answer):
    results = search.text_search(TextSearchRequest(query)).results
    assert results[0].title == title
    assert answer in results[0].summary


def test_element_by_short_symbol(search):
    assert top_titles(search, "what element has the symbol K")[0] == "Potassium"
    assert top_titles(search, "which element is Fe")[0] == "Iron"
    # a capitalised first word is a word, not a symbol ("In" is indium's symbol)
    assert "Indium" not in top_titles(search, "In which country is Nairobi")[:1]


def test_typo_correction_prefers_entity_names_and_leaves_known_words(search):
    analyzer = search.index.analyzer
    assert analyzer.correct("chlie") == "chile"
    assert analyzer.correct("gamiba") == "gambia"
    assert analyzer.correct("capital") == "capital"  # indexed words are never "corrected"
    assert analyzer.correct("zzzzqqq") == "zzzzqqq"  # nothing close: kept as typed


def test_sentences_split_at_full_stops_not_abbreviations():
    text = "Washington, D.C. is the capital. Apple Co. makes phones. It is in St. Louis. J. R. R. Tolkien wrote."
    assert split_sentences(text) == [
        "Washington, D.C. is the capital.",
        "Apple Co. makes phones.",
        "It is in St. Louis.",
        "J. R. R. Tolkien wrote.",
    ]


def test_summary_keeps_matching_sentences_then_fills_its_budget():
    text = "Arvenia is a land. Bees hum. Cats nap. The capital of Türkiye is Ankara. Dogs bark. Eels swim."
    summary = summarize(text, ["capital", "turkiye"], 4, fill=True)
    assert summary == "Arvenia is a land. Bees hum. Cats nap. The capital of Türkiye is Ankara."  # accents folded
    assert summarize(text, ["nothing"], 3, fill=True) == "Arvenia is a land. Bees hum. Cats nap."
    # without fill (the live backends' extractive fallback): only the lead and matching sentences
    assert summarize(text, ["capital", "turkiye"], 4) == "Arvenia is a land. The capital of Türkiye is Ankara."
