"""Other names of the corpus's countries, for text search: what users type instead of the page title.

Built once (``python -m mmsearch_env.corpus.build --names-only``) into ``data/names.json`` from two sources:

* the Unicode CLDR territory names that the ``babel`` package ships: the English name (and its
  parenthesised variant, e.g. "Myanmar (Burma)"), and the name in each of the country's own official
  languages and in a set of widely used Latin-script languages (endonyms and exonyms: Deutschland,
  Suomi, Magyarország, España…); names that do not fold to ASCII letters are left out (search folds
  accents away, so a non-Latin name could never be typed to match);
* :data:`FORMER_NAMES`, a short curated table of former and colloquial English names that CLDR does not
  carry (Persia, Siam, Zaire, Holland…).

The page's own facts (``aliases``: the source's alternative spellings and official name) are read at
index load time, so they need no entry here.
"""

from __future__ import annotations

import contextlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

__all__ = ["FORMER_NAMES", "build_names", "load_names"]

#: cca2 → former or colloquial English names.
FORMER_NAMES = {
    "IR": ["Persia"], "TH": ["Siam"], "LK": ["Ceylon"], "CD": ["Zaire", "Congo-Kinshasa", "DRC", "DR Congo"],
    "CG": ["Congo-Brazzaville"], "MM": ["Burma"], "NL": ["Holland"], "SZ": ["Swaziland"],
    "TL": ["East Timor"], "TR": ["Turkey"], "KH": ["Kampuchea"], "BJ": ["Dahomey"], "BF": ["Upper Volta"],
    "ZW": ["Rhodesia"], "BW": ["Bechuanaland"], "GH": ["Gold Coast"], "TZ": ["Tanganyika"], "MW": ["Nyasaland"],
    "ZM": ["Northern Rhodesia"], "LS": ["Basutoland"], "BZ": ["British Honduras"], "GY": ["British Guiana"],
    "SR": ["Dutch Guiana"], "TW": ["Formosa", "Republic of China"], "CN": ["PRC", "Mainland China"],
    "MK": ["Macedonia", "FYROM"], "CZ": ["Czech Republic"], "CV": ["Cabo Verde"], "CI": ["Cote d'Ivoire"],
    "GB": ["Britain", "Great Britain", "UK", "England"], "US": ["USA", "America", "United States of America"],
    "AE": ["UAE", "Emirates"], "SA": ["KSA"], "PG": ["PNG"], "VA": ["Holy See", "Vatican"],
    "KR": ["Republic of Korea", "Korea"], "KP": ["DPRK"], "RU": ["Russian Federation"], "MD": ["Moldavia"],
    "BY": ["Byelorussia", "Belorussia"], "KG": ["Kirghizia"], "FM": ["Federated States of Micronesia"],
    "LA": ["Lao"], "BN": ["Brunei Darussalam"], "VN": ["Viet Nam"], "SY": ["Syrian Arab Republic"],
}  # fmt: skip

#: Latin-script CLDR locales whose names for every country are indexed (besides each country's own).
LOCALES = ("en", "de", "fr", "es", "it", "pt", "nl", "sv", "nb", "da", "fi", "pl", "hu", "cs", "sk", "hr",
           "sl", "ro", "tr", "id", "ms", "sw", "is", "ga", "et", "lv", "lt", "sq", "mt", "ca", "tl", "vi")  # fmt: skip


def _latin(name: str) -> bool:
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    letters = re.sub(r"[^A-Za-z]", "", folded)
    return len(letters) >= 3 and len(letters) >= 0.8 * len(re.sub(r"[\W\d_]", "", name))


def build_names(pages: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Page id → other names, for every country page (sorted, so two builds write the same file)."""
    from babel import Locale, UnknownLocaleError

    english_languages = {v.lower(): k for k, v in Locale("en").languages.items()}
    locales = {code: Locale.parse(code) for code in LOCALES}
    out: dict[str, list[str]] = {}
    for page in pages:
        if page["kind"] != "country":
            continue
        cca2 = page["facts"]["cca2"]
        own = []
        for language in page["facts"].get("languages", []):
            code = english_languages.get(language.lower())
            if code:
                # CLDR has no locale data for every language
                with contextlib.suppress(ValueError, LookupError, UnknownLocaleError):
                    own.append(Locale.parse(code))
        names = set(FORMER_NAMES.get(cca2, []))
        for locale in (*locales.values(), *own):
            name = locale.territories.get(cca2)
            if not name:
                continue
            for part in re.split(r"\s*[()]\s*", name):
                part = part.strip(" -")
                if part and _latin(part):
                    names.add(part)
        names.discard(page["title"])
        out[page["id"]] = sorted(names)
    return out


def write_names(out: Path, pages: list[dict[str, Any]]) -> None:
    (out / "names.json").write_text(json.dumps(build_names(pages), ensure_ascii=False, indent=0, sort_keys=True) + "\n",
                                    encoding="utf-8")  # fmt: skip


def load_names(path: Path) -> dict[str, list[str]]:
    """The names file at ``path`` (``{}`` when a corpus folder has none)."""
    file = Path(path) / "names.json"
    if not file.is_file():
        return {}
    return json.loads(file.read_text(encoding="utf-8"))
