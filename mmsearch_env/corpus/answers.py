"""The accepted answers of a question: every common correct form of its ground truth.

The reward stays the paper's exact match after normalisation; fairness comes from listing the forms a
correct answer takes in ``candidate_answers`` (:func:`fair_aliases`), never from a looser normaliser.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

__all__ = ["fair_aliases"]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def fair_aliases(cand: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """Every common correct form of a candidate's answer (the reward stays exact match on these):
    accent-free and hyphen-free spellings, every legal currency with its short name and code, plural
    demonyms, the continent beside the subregion, "period 4" beside "4", the common names of an emoji
    (its head noun, singular and plural, joined compounds, the noun an adjective name comes from), a
    brand written with or without spaces or its web domain, the languages a source lists under a dialect
    name ("Swiss German" is German), and the currency that replaced an outdated one. Forms without a
    letter or digit (a folded non-Latin name) are left out."""
    category, answer = cand["category"], cand["answer"]
    forms = [*cand["aliases"]]
    if category == "country-currency":
        for cur in facts.get("currency", []):
            forms += [cur["name"], cur["code"], cur["name"].split()[-1]]  # "Albanian lek" -> "lek"
            forms += FORMER_CURRENCY_SUCCESSORS.get(cur["code"], [])
    elif category == "country-subregion" and facts.get("region"):
        forms.append(facts["region"])
        if facts["region"] == "Americas":  # the continent: North America runs down to Panama
            forms += ["America", *(["North America"] if answer in NORTH_AMERICA else ["South America"])]
        forms += SUBREGION_COMMON_NAMES.get(answer, [])
    elif category == "country-demonym":
        forms += [*DEMONYM_COMMON_FORMS.get(answer, []), *(answer.split(" or ") if " or " in answer else [])]
        if answer.endswith("stani"):  # "Uzbekistani" -> "Uzbek": the usual word
            forms += [answer[: -len("istani")], answer[: -len("istani")] + "s"]
        if answer[-1:] in "ni" or answer.endswith("er"):
            forms.append(answer + "s")  # "Kenyan" -> "Kenyans", "New Zealander" -> "New Zealanders"
    elif category == "country-language":
        forms += [LANGUAGE_DIALECTS[lang] for lang in facts.get("languages", []) if lang in LANGUAGE_DIALECTS]
    elif category == "element-period":
        forms.append(f"period {answer}")
    elif category.startswith("emoji-"):
        forms += _emoji_forms(answer, {t.strip() for t in facts.get("tags", "").split(",")})
    elif category == "brand-logo":
        forms += _brand_forms(answer)
    if category in ("country-flag", "country-outline", "wiki-capital_of"):
        forms += COUNTRY_SHORT_NAMES.get(answer, [])
    for form in [answer, *forms]:
        forms += [_fold(form), form.replace("-", " "), _fold(form).replace("-", " ")]
    return [f for f in dict.fromkeys(forms) if f and f != answer and any(ch.isalnum() for ch in f)]


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "sh", "ch", "x", "z")) else "s")


def _emoji_forms(name: str, tags: set[str]) -> list[str]:
    forms = [*EMOJI_COMMON_NAMES.get(name, [])]
    if " with " in name:  # "camera with flash" is a camera: the head noun comes before "with"
        name = name.split(" with ")[0]
        forms.append(name)
    words = name.split()
    if len(words) > 1 and words[-1] in tags:  # "glowing star" -> "star"
        forms.append(words[-1])
    if len(words) == 2:
        forms.append("".join(words))  # "black bird" -> "blackbird"
    if not name.endswith("s"):  # "headphone" -> "headphones"
        forms.append(" ".join([*words[:-1], _plural(words[-1])]))
    for tag in tags:  # "hamburger" -> "burger": the short name a tag gives
        if len(words) == 1 and len(tag) >= 4 and name != tag and name.endswith(tag):
            forms.append(tag)
    for tag in tags:  # "locked" -> "lock": the noun an adjective name is made from
        if (
            len(words) == 1
            and len(tag) >= 3
            and name != tag
            and name.startswith(tag)
            and name[len(tag) :] in ("ed", "d")
        ):
            forms.append(tag)
    return forms


def _brand_forms(name: str) -> list[str]:
    forms = []
    if " " in name:
        forms.append(name.replace(" ", ""))  # "Hacker Noon" -> "HackerNoon"
    split = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    if split != name:
        forms.append(split)  # "CodeSandbox" -> "Code Sandbox"
    bare = re.sub(r"\.(com|org|net|io|lv|ru|de|me|js|ai|app|dev|co)$", "", name, flags=re.IGNORECASE)
    if bare != name and len(bare) >= 3:
        forms.append(bare)  # "Draugiem.lv" -> "Draugiem"
    words = name.split()
    if len(words) > 1 and words[-1] in ("IDE", "App"):  # "Apache NetBeans IDE" -> "Apache NetBeans"
        words = words[:-1]
        forms.append(" ".join(words))
    if len(words) > 1 and words[0] == "Apache":  # "Apache NetBeans" -> "NetBeans"
        forms.append(" ".join(words[1:]))
    return forms


#: UN subregion names beside the names people use for them
SUBREGION_COMMON_NAMES = {
    "South-Eastern Asia": ["Southeast Asia", "South East Asia"], "Eastern Asia": ["East Asia"],
    "Western Asia": ["West Asia", "Middle East"], "Southern Asia": ["South Asia"],
    "Southeast Europe": ["Southeastern Europe", "South-Eastern Europe"], "Eastern Europe": ["East Europe"], "Western Europe": ["West Europe"],
    "Northern Africa": ["North Africa"], "Southern Africa": [], "Eastern Africa": ["East Africa"],
    "Western Africa": ["West Africa"], "Middle Africa": ["Central Africa"],
}  # fmt: skip
#: demonyms a source spells unusually, beside the usual spelling
DEMONYM_COMMON_FORMS = {
    "Maldivan": ["Maldivian"],
    "Kirghiz": ["Kyrgyz", "Kyrgyzstani"],
    "Tadzhik": ["Tajik", "Tajikistani"],
}
#: countries usually called by a shorter name than their title
COUNTRY_SHORT_NAMES = {"Bosnia and Herzegovina": ["Bosnia"]}
#: emoji whose picture most people name differently from the Unicode name
EMOJI_COMMON_NAMES = {
    "chipmunk": ["squirrel"], "black bird": ["crow", "raven"], "locked": ["padlock"],
    "fishing pole": ["fishing rod", "rod"],
}  # fmt: skip
#: subregions of the Americas on the North American continent
NORTH_AMERICA = ("North America", "Central America", "Caribbean")


#: currencies a source still lists after they were replaced: code -> the successor's name and code
FORMER_CURRENCY_SUCCESSORS = {"ANG": ["Caribbean guilder", "XCG"]}
#: languages a source names by a dialect: the language's own name is just as correct
LANGUAGE_DIALECTS = {"Swiss German": "German"}
