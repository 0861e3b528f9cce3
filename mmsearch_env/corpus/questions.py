"""The embedded question set ("corpus" dataset): generated from corpus facts, checked against the search.

Each question has a ``search_need`` label (``image``: identify the entity by its picture; ``image+text``:
identify it, then look a fact up; ``text``: the entity is named, look the fact up; ``none``: the picture
itself answers), answer aliases as ``candidate_answers``, a category, and a split. Splits are by entity
and test entities never appear in train or validation, so memorising training answers cannot solve test.

Question images are *perturbed views* of corpus images, regenerated at load time from the stored
thumbnail and a per-question seed (:func:`mmsearch_env.corpus.perturb.perturb`) — bit-identical on every
load, never the stored file, and about 40 bytes per question instead of a few kB of JPEG each.

Questions over the Wikipedia summaries (years of birth and death, the country of a capital) come from
:mod:`mmsearch_env.corpus.wikiquestions` and are numbered after the others. Questions are defined by the
data alone, never filtered by what the shipped search finds; pictures that
look almost the same as another page's (Chad and Romania) are not asked about. Accepted answers include
the common correct forms (:func:`fair_aliases`). :func:`check_question` measures whether the shipped
search lets a perfect reader answer (``benchmarks/corpus_questions.py`` reports it over the whole set).
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch_env.corpus import DATA_DIR, Corpus, load_corpus
from mmsearch_env.corpus.answers import fair_aliases
from mmsearch_env.corpus.perturb import ink_kept, perturb
from mmsearch_env.corpus.wikiquestions import title_card, wiki_candidates
from mmsearch_env.corpus.wordmarks import MISREAD_WORDMARKS, acronym, load_logo_text, spells_name
from mmsearch_env.data.schema import Example
from mmsearch_env.errors import DatasetError
from mmsearch_env.reward import normalize_answer
from mmsearch_env.search.base import TextSearchRequest

__all__ = [
    "SPLITS",
    "CorpusExamples",
    "build_questions",
    "check_question",
    "corpus_examples",
    "fair_aliases",
    "load_question_rows",
    "near_identical_images",
    "test_phrasing",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_SPLIT_SHARES = {"test": 0.15, "validation": 0.10}

# -- templates: (question paraphrases, text-query template) -------------------------------------------
IDENTIFY = {
    "flag": (
        "Which country's flag is this?",
        "This flag belongs to which country?",
        "Name the country that uses this flag.",
    ),
    "outline": (
        "Which country has this outline?",
        "This silhouette is the map shape of which country?",
        "Name the country whose borders form this shape.",
    ),
    "logo": (
        "Which brand does this logo belong to?",
        "Whose logo is this?",
        "Name the company or product with this logo.",
    ),
    "emoji": ("Which place or building is depicted here?", "What landmark or place is shown in this picture?"),
}
SUBJECT = {"flag": "the country whose flag is shown", "outline": "the country with the outline shown"}
COUNTRY_FACTS = {
    "capital": (("What is the capital of {s}?", "Which city is the capital of {s}?"), "{e} capital"),
    "currency": (("What currency is used in {s}?", "What is the official currency of {s}?"), "{e} currency"),
    "calling_code": (("What is the international calling code of {s}?", "Which telephone calling code does {s} use?"),
                     "{e} international calling code"),
    "tld": (("What is the internet country code top-level domain of {s}?", "Which web domain ending belongs to {s}?"),
            "{e} internet country code top-level domain"),
    "language": (("What is an official language of {s}?", "Name an official language of {s}."), "{e} official language"),
    "subregion": (("In which part of the world is {s}?", "Which subregion of the world is {s} in?"), "{e} subregion region"),
    "demonym": (("What are people from {s} called?", "What is the demonym for people of {s}?"), "people from {e} called"),
}  # fmt: skip
ELEMENT_FACTS = {
    "atomic_number": (("What is the atomic number of {s}?", "How many protons does an atom of {s} have?"),
                      "{e} atomic number"),
    "symbol": (("What is the chemical symbol of {s}?", "Which symbol stands for {s} in the periodic table?"),
               "{e} chemical element symbol"),
    "period": (("In which period of the periodic table is {s}?", "Which period (row) of the periodic table holds {s}?"),
               "{e} period periodic table"),
    "discovery_year": (("In what year was {s} discovered?", "When was {s} discovered?"), "{e} discovered year"),
    "atomic_weight": (("What is the standard atomic weight of {s}?", "What is the atomic weight of {s}?"),
                      "{e} standard atomic weight"),
}  # fmt: skip
NONE_QUESTIONS = {
    "emoji": ("What is shown in this picture?", "What does this picture show?", "Name the thing in this image."),
    "tile": ("Which chemical symbol is written on this tile?", "What element symbol does this tile show?"),
}
# -- test-only phrasings: never used in train or validation, so the test split measures new phrasings as
# well as new entities (a policy that learned the training templates by rote meets these first at test).
TEST_IDENTIFY = {
    "flag": ("Whose national flag is pictured here?", "Identify the nation that flies this flag."),
    "outline": ("The map outline shown belongs to which nation?", "Identify the country drawn in this silhouette."),
    "logo": ("Which company or product uses the emblem shown?", "Identify the brand behind this logo."),
    "emoji": ("Identify the place pictured here.", "This picture shows which landmark or place?"),
}
TEST_NONE = {
    "emoji": ("Identify the thing pictured.", "What is this a picture of?"),
    "tile": ("This periodic-table tile shows which chemical symbol?", "Read the element symbol off this tile."),
}
TEST_SUBJECT = {"flag": "the nation this flag stands for", "outline": "the country drawn in this outline"}
TEST_COUNTRY_FACTS = {
    "capital": ("Name the capital city of {s}.", "The seat of government of {s} is which city?"),
    "currency": ("What money is legal tender in {s}?", "Which currency do people pay with in {s}?"),
    "calling_code": ("What do you dial before a phone number in {s} when calling from abroad?",
                     "What is the country dialling code of {s}?"),
    "tld": ("Websites registered in {s} end in which country domain?", "What is the two-letter web domain of {s}?"),
    "language": ("Which language is official in {s}?", "Give one official language of {s}."),
    "subregion": ("Which region of the world does {s} lie in?", "Where in the world is {s} located?"),
    "demonym": ("What do you call a person from {s}?", "What is the nationality word for people of {s}?"),
}  # fmt: skip
TEST_ELEMENT_FACTS = {
    "atomic_number": ("How many protons are in the nucleus of {s}?", "What number does {s} have in the periodic table?"),
    "period": ("Which row of the periodic table is {s} in?", "{s} sits in which period of the periodic table?"),
    "discovery_year": ("Which year saw the discovery of {s}?", "{s} was first discovered in which year?"),
    "atomic_weight": ("Give the standard atomic weight of {s}.", "What does one mole of {s} weigh in grams, per the standard atomic weight?"),
}  # fmt: skip
PLACE_SUBGROUPS = ("place-building", "place-geographic", "place-religious", "place-map", "place-other")


def _country_answer(facts: dict[str, Any], fact: str) -> tuple[str, list[str]] | None:
    if fact == "capital" and facts["capital"]:
        return facts["capital"][0], facts["capital"][1:]
    if fact == "currency" and facts["currency"]:
        cur = facts["currency"][0]
        return cur["name"], [cur["code"]]
    if fact == "calling_code" and facts["calling_code"]:
        code = facts["calling_code"]
        return code, [code.lstrip("+")]
    if fact == "tld" and facts["tld"]:
        return facts["tld"][0], [t.lstrip(".") for t in facts["tld"]]
    if fact == "language" and facts["languages"]:
        return facts["languages"][0], facts["languages"][1:]
    if fact == "subregion" and facts["subregion"]:
        return facts["subregion"], []
    if fact == "demonym" and facts["demonym"]:
        return facts["demonym"], []
    return None


def _element_answer(facts: dict[str, Any], fact: str) -> tuple[str, list[str]] | None:
    value = facts.get(fact)
    if value is None or value == "":
        return None
    if fact == "atomic_weight":
        return f"{value:.3f}", [f"{value:.2f}", f"{value:.1f}"]
    return str(value), []


def _entity_splits(corpus: Corpus, rng: np.random.Generator) -> dict[str, str]:
    """Entity page id → split; shares per kind so every split has every kind."""
    out: dict[str, str] = {}
    for kind in ("country", "element", "brand", "emoji"):
        ids = sorted(p.id for p in corpus.pages if p.kind == kind)
        order = rng.permutation(len(ids))
        n_test = round(len(ids) * _SPLIT_SHARES["test"])
        n_val = round(len(ids) * _SPLIT_SHARES["validation"])
        for rank, i in enumerate(order):
            out[ids[i]] = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
    return out


def _candidates(rng: np.random.Generator, corpus: Corpus) -> Iterator[dict[str, Any]]:
    """Every candidate question (unchecked)."""
    image_pages_unique = np.bincount(corpus.dup_group)

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    def unique(image: int) -> bool:
        return image_pages_unique[corpus.dup_group[image]] == 1

    for page in corpus.pages:
        f = page.facts
        imgs = {str(corpus.image_kind[i]): i for i in page.images}
        base = {"entity": page.id, "entity_title": page.title}
        if page.kind == "country":
            aliases = [a for a in f.get("aliases", []) if a != page.title]
            for kind in ("flag", "outline"):
                if kind in imgs and unique(imgs[kind]):
                    yield {**base, "need": "image", "category": f"country-{kind}", "image": imgs[kind],
                           "question": pick(IDENTIFY[kind]), "answer": page.title, "aliases": aliases}  # fmt: skip
            facts = [k for k in COUNTRY_FACTS if _country_answer(f, k)]
            rng.shuffle(facts)
            for n, fact in enumerate(facts):
                answer, aliases = _country_answer(f, fact)  # type: ignore[misc]
                templates, query = COUNTRY_FACTS[fact]
                if n < 3:  # the first three facts: identify from a picture, then look up
                    kind = "flag" if n % 2 == 0 else "outline"
                    if kind in imgs and unique(imgs[kind]):
                        yield {**base, "need": "image+text", "category": f"country-{fact}", "image": imgs[kind],
                               "question": pick(templates).format(s=SUBJECT[kind]), "answer": answer,
                               "aliases": aliases, "query_template": query}  # fmt: skip
                if n >= 2 and "flag" in imgs:  # the rest (overlapping one): named entity, text search
                    yield {**base, "need": "text", "category": f"country-{fact}", "image": imgs["flag"],
                           "question": pick(templates).format(s=page.title) + " (The image shows its flag.)",
                           "answer": answer, "aliases": aliases, "text_query": query.format(e=page.title)}  # fmt: skip
        elif page.kind == "element":
            tile = imgs.get("tile")
            if tile is None:
                continue
            yield {**base, "need": "none", "category": "element-tile", "image": tile,
                   "question": pick(NONE_QUESTIONS["tile"]), "answer": f["symbol"], "aliases": []}  # fmt: skip
            for fact, (templates, query) in ELEMENT_FACTS.items():
                got = _element_answer(f, fact)
                if got is None or fact == "symbol":
                    continue
                yield {**base, "need": "text", "category": f"element-{fact}", "image": tile,
                       "question": pick(templates).format(s=page.title), "answer": got[0], "aliases": got[1],
                       "text_query": query.format(e=page.title)}  # fmt: skip
        elif page.kind == "brand" and "logo" in imgs and unique(imgs["logo"]):
            yield {**base, "need": "image", "category": "brand-logo", "image": imgs["logo"],
                   "question": pick(IDENTIFY["logo"]), "answer": page.title, "aliases": f.get("aliases", [])}  # fmt: skip
        elif page.kind == "emoji" and "emoji" in imgs and unique(imgs["emoji"]):
            place = f.get("subgroup") in PLACE_SUBGROUPS
            yield {**base, "need": "image" if place else "none", "category": f"emoji-{f.get('group')}",
                   "image": imgs["emoji"], "question": pick(IDENTIFY["emoji"] if place else NONE_QUESTIONS["emoji"]),
                   "answer": f["name"], "aliases": []}  # fmt: skip


def near_identical_images(corpus: Corpus, path: Path) -> set[int]:
    """Images that look (almost) the same as another page's image of the same kind — Chad and Romania,
    Indonesia and Monaco, specks of ocean islands: no question asks to identify them.

    Two images are near-identical when their stored views' network features have cosine >= 0.99, or
    their 24×16 pixels differ by at most 1.0 (of 255) on average.
    """
    with np.load(path / "image_index.npz", allow_pickle=False) as data:
        feats, view_image = data["feats"].astype(np.float32), data["view_image"]
    first = {}
    for row, image in enumerate(view_image.tolist()):
        first.setdefault(image, row)
    out: set[int] = set()
    kinds = np.asarray([str(k) for k in corpus.image_kind])
    for kind in ("flag", "outline", "logo", "emoji"):
        images = [i for i in range(corpus.n_images) if kinds[i] == kind and i in first]
        if len(images) < 2:
            continue
        f = feats[[first[i] for i in images]]
        sim = f @ f.T
        pixels = np.stack([np.asarray(corpus.thumbnail(i).resize((24, 16)), dtype=np.float32).ravel() for i in images])
        pages = corpus.image_page[images]
        groups = corpus.dup_group[images]
        for a in range(len(images)):
            diff = np.abs(pixels - pixels[a]).mean(axis=1)
            close = ((sim[a] >= 0.99) | (diff <= 1.0)) & (pages != pages[a]) & (groups != groups[a])
            if close.any():
                out.add(images[a])
    return out


def test_phrasing(cand: dict[str, Any], image_kind: str, question_id: str) -> str | None:
    """A test-only phrasing of ``cand`` (chosen by a hash of its id, so builds agree), or ``None``."""
    category, need = cand["category"], cand["need"]
    fact = category.split("-", 1)[1]
    if category.startswith("country-") and fact in TEST_COUNTRY_FACTS:
        options, subject = TEST_COUNTRY_FACTS[fact], cand["entity_title"]
        if need == "image+text":
            subject = TEST_SUBJECT[image_kind]
    elif category.startswith("element-") and fact in TEST_ELEMENT_FACTS:
        options, subject = TEST_ELEMENT_FACTS[fact], cand["entity_title"]
    elif need == "image":
        options, subject = TEST_IDENTIFY.get(image_kind, ()), ""
    elif need == "none":  # a wordmark logo is asked like any logo
        options, subject = TEST_NONE.get(image_kind) or TEST_IDENTIFY.get(image_kind, ()), ""
    else:
        return None
    if not options:
        return None
    question = options[zlib.crc32(question_id.encode()) % len(options)].format(s=subject)
    if need == "text" and category.startswith("country-"):
        question += " (The image shows its flag.)"
    return question


#: an identify question's picture keeps at least this share of the image's ink through its crop
MIN_INK_KEPT = 0.75


def _seed_keeping_ink(image: Any, seed: int, question_id: str) -> int:
    """``seed``, or a seed derived from the question id (deterministic) whose crop keeps enough ink:
    a crop that cuts a frame logo to an "L" or a country's islands off leaves nothing to identify."""
    for attempt in range(16):
        if ink_kept(image, seed) >= MIN_INK_KEPT:
            return seed
        seed = zlib.crc32(f"{question_id}/{attempt}".encode()) & 0x7FFFFFFF
    return seed


def build_questions(out: Path = DATA_DIR, *, seed: int = 0) -> dict[str, int]:
    """Generate every question the facts define and write ``questions.jsonl.gz``; returns counts.

    The set is not filtered by what the shipped search finds (that would make the oracle's accuracy
    true by construction): :func:`check_question` measures it instead (``benchmarks/corpus_questions.py``).
    Question ids number the candidates in generation order, so a question keeps its id across builds.
    """
    corpus = load_corpus(out)
    rng = np.random.default_rng(seed)
    splits = _entity_splits(corpus, rng)
    unfair = near_identical_images(corpus, out)
    logo_text = load_logo_text(out)
    rows, dropped = [], 0
    candidates = list(_candidates(rng, corpus))
    for n, cand in enumerate(candidates):
        image_seed = int(rng.integers(2**31))
        facts = corpus.pages[corpus.by_id[cand["entity"]]].facts
        if cand["need"] in ("image", "image+text") and cand["image"] in unfair:
            dropped += 1
            continue
        if cand["category"] == "element-atomic_weight" and float(facts["atomic_weight"]).is_integer():
            dropped += 1  # a mass number (no stable isotope), not a standard atomic weight
            continue
        need = cand["need"]
        if cand["category"] == "element-atomic_number":
            need = "none"  # the tile prints the atomic number
        if cand["category"] == "brand-logo":
            read = logo_text.get(cand["entity"], "")
            initials = acronym(read, cand["answer"])
            if initials:  # "TFI" printed for Transport for Ireland: an accepted answer the picture shows
                cand = {**cand, "aliases": [*cand["aliases"], initials]}
            if spells_name(read, cand["answer"]) or initials or cand["entity"] in MISREAD_WORDMARKS:
                need = "none"  # a wordmark: the picture spells the answer
        if need in ("image", "image+text") and str(corpus.image_kind[cand["image"]]) != "flag":
            image_seed = _seed_keeping_ink(corpus.thumbnail(cand["image"]), image_seed, f"corpus-{n:05d}")
        query = cand.get("text_query") or (
            cand["query_template"].format(e=cand["entity_title"]) if "query_template" in cand else None
        )
        question = cand["question"]
        if splits[cand["entity"]] == "test":
            question = test_phrasing(cand, str(corpus.image_kind[cand["image"]]), f"corpus-{n:05d}") or question
        row = {
            "id": f"corpus-{n:05d}",
            "question": question,
            "answer": cand["answer"],
            "candidate_answers": fair_aliases(cand, facts),
            "category": cand["category"],
            "search_need": need,
            "split": splits[cand["entity"]],
            "image_ref": {"image": int(cand["image"]), "seed": image_seed},
            "entity": cand["entity"],
        }
        if query:
            row["text_query"] = query
        if "query_template" in cand:
            row["query_template"] = cand["query_template"]
        rows.append(row)
    n = len(candidates)  # Wikipedia questions number on after the others, so adding them moves no id
    for offset, cand in enumerate(wiki_candidates(corpus, seed)):
        row = {k: cand[k] for k in ("question", "answer", "category", "search_need", "split", "image_ref",
                                    "entity", "text_query")}  # fmt: skip
        row["id"] = f"corpus-{n + offset:05d}"
        row["candidate_answers"] = fair_aliases(cand, {})
        rows.append(row)
    with gzip.GzipFile(out / "questions.jsonl.gz", "wb", mtime=0) as handle:
        for row in rows:
            handle.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    log.info("questions: %s written, %d not asked (near-identical pictures, mass-number weights)", counts, dropped)
    return counts


def check_question(search: Any, row: dict[str, Any], example: Any) -> bool:
    """Whether the shipped search lets a perfect reader answer ``row``: for image needs, the entity's
    page in the image-search top 5 (``image+text``: top 1, whose title fills the text query); for text
    needs, an accepted answer in the five text-search summaries. ``none`` questions pass."""
    need = row["search_need"]
    if need == "none":
        return True
    page_index = search.corpus.by_id[row["entity"]]
    query = row.get("text_query")
    if need in ("image", "image+text"):
        ranked = [p for p, _, _ in search.rank_images(example.image)]
        if page_index not in (ranked[:1] if need == "image+text" else ranked):
            return False
        if need == "image+text":
            query = row["query_template"].format(e=search.corpus.pages[ranked[0]].title)
    if not query:
        return True
    response = search.text_search(TextSearchRequest(query))
    # a reader splits "(1815–1852)" at the dash; the normaliser keeps non-ASCII dashes inside a token
    texts = " ".join(normalize_answer((r.summary or "").replace("–", " ")) for r in response.results)
    targets = [normalize_answer(a) for a in (row["answer"], *row["candidate_answers"])]
    return any(t and f" {t} " in f" {texts} " for t in targets)


@lru_cache(maxsize=2)
def load_question_rows(path: str | Path = DATA_DIR) -> tuple[dict[str, Any], ...]:
    """The raw question rows (no images), cached."""
    file = Path(path) / "questions.jsonl.gz"
    if not file.is_file():
        raise DatasetError(f"question file {str(file)!r} is missing; rebuild with python -m mmsearch_env.corpus.build")
    with gzip.open(file, "rt", encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle if line.strip())


class CorpusExamples(Sequence):  # type: ignore[type-arg]
    """The questions of one split as a lazy sequence of :class:`~mmsearch_env.data.Example`.

    Each question's image is regenerated (perturbed from its corpus thumbnail) when that question is
    indexed, so an environment over thousands of questions starts at once and pays ~1 ms per question
    it draws; the last ``cache_size`` examples are kept (regeneration is deterministic, so an evicted
    example comes back identical). ``ids`` lists every question id without building any image.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], path: str | Path = DATA_DIR, *, cache_size: int = 512) -> None:
        self.rows = tuple(rows)
        self.path = Path(path)
        self.ids = tuple(row["id"] for row in self.rows)
        self.cache_size = cache_size
        self._cache: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):  # int or slice, as a Sequence
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self.rows)
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        example = _example(self.rows[index], load_corpus(self.path))
        self._cache[index] = example
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return example


def _example(row: dict[str, Any], corpus: Corpus) -> Any:
    ref = row["image_ref"]
    source = title_card(ref["card"]) if "card" in ref else corpus.thumbnail(ref["image"])
    image, kinds = perturb(source, ref["seed"])
    metadata = {k: row[k] for k in ("entity", "text_query", "query_template", "split") if k in row}
    metadata["perturbations"] = list(kinds)
    return Example(
        id=row["id"], question=row["question"], image=image, answer=row["answer"],
        candidate_answers=tuple(row["candidate_answers"]), category=row["category"],
        search_need=row["search_need"], metadata=metadata,
    )  # fmt: skip


def corpus_examples(split: str | None, path: str | Path = DATA_DIR) -> CorpusExamples:
    """The questions of ``split`` (``None``: all), lazily materialised (see :class:`CorpusExamples`)."""
    rows = [row for row in load_question_rows(path) if split is None or row["split"] == split]
    return CorpusExamples(rows, path)
