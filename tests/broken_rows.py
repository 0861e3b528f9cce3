"""A JSONL question file whose one row has an image that does not decode (for the on_error tests)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def questions_with_one_broken_image(folder: Path, n: int, broken: int, **fields: str) -> Path:
    """``n`` rows ``q0 ... q{n-1}`` with tiny PNGs; row ``broken``'s file is not a picture."""
    rows = []
    for i in range(n):
        name = f"q{i}.png"
        if i == broken:
            (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
        else:
            Image.new("RGB", (8, 8), (i, 2 * i % 256, 3)).save(folder / name)
        rows.append({"id": f"q{i}", "question": "Which country?", "image": name, "answer": "Arvenia", **fields})
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
