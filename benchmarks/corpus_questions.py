"""The shipped engine's oracle accuracy on the whole embedded question set, with the failures listed.

    python benchmarks/corpus_questions.py     # writes benchmarks/results/corpus_questions.{json,md}

The question set is defined by the corpus facts alone (never filtered by what the search finds), so this
is a measurement: a question passes when the shipped search lets a perfect reader answer it
(:func:`mmsearch_env.corpus.questions.check_question`: the entity's page among the image-search results
— top 1 when a text lookup follows — and an accepted answer in the text-search summaries).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from mmsearch_env.corpus.questions import check_question, corpus_examples, load_question_rows
from mmsearch_env.search.corpus import CorpusSearch

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    rows = load_question_rows()
    examples = corpus_examples(None)
    search = CorpusSearch()
    by: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    failures = []
    for row, example in tqdm(zip(rows, examples, strict=True), total=len(rows), desc="questions"):
        ok = check_question(search, row, example)
        for key in ("search_need", "category", "split"):
            by[key][row[key]].append(int(ok))
        by["all"]["all"].append(int(ok))
        if not ok:
            failures.append({k: row[k] for k in ("id", "category", "search_need", "split", "answer", "entity")})
    result = {
        key: {name: {"n": len(v), "oracle": sum(v) / len(v)} for name, v in sorted(groups.items())}
        for key, groups in by.items()
    }
    result["failures"] = failures
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "corpus_questions.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    lines = ["# Oracle accuracy of the shipped corpus search on the whole question set", ""]
    for key in ("all", "search_need", "split", "category"):
        lines += [f"| {key} | n | oracle |", "|---|---|---|"]
        lines += [f"| {name} | {v['n']} | {v['oracle']:.3f} |" for name, v in result[key].items()]
        lines.append("")
    lines += [f"## Failures ({len(failures)})", ""]
    lines += [f"- {f['id']} {f['category']} ({f['search_need']}, {f['split']}): {f['answer']}" for f in failures]
    (RESULTS / "corpus_questions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:40]))


if __name__ == "__main__":
    main()
