"""The accepted answers of a question: every common correct form of its ground truth.

The reward stays the paper's exact match after normalisation; fairness comes from listing the forms a
correct answer takes in ``candidate_answers`` (:func:`fair_aliases`), never from a looser normaliser.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from mmsearch_env.corpus.common_names import (
    BRITISH_AMERICAN,
    CAPITAL_COMMON_NAMES,
    CURRENCY_COMMON_NAMES,
    DEMONYM_COMMON_FORMS,
    EMOJI_COMMON_NAMES,
    EMOJI_NO_HEAD,
    EMOJI_NOT_ITS_HEAD,
    LANGUAGE_COMMON_NAMES,
    TRANSLITERATE,
)

__all__ = ["fair_aliases"]


def _fold(text: str) -> str:
    text = text.translate(TRANSLITERATE)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def fair_aliases(cand: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """Every common correct form of a candidate's answer (the reward stays exact match on these):
    accent-free and hyphen-free spellings (letters NFKD keeps, like "ł", transliterated), British and
    American spellings, "Saint" beside "St.", both halves of a parenthesised or listed name, every legal
    currency with its short name, code and common names, plural and noun demonyms, the continent beside
    the subregion, "period 4" beside "4", the common names of an emoji (its head noun, singular and
    plural, joined compounds, the noun an adjective name comes from), a brand written with or without
    spaces, its web domain or its company suffix, a language's other names, a capital's other names, and
    the currency that replaced an outdated one. Forms without a letter or digit (a folded non-Latin name)
    are left out."""
    category, answer = cand["category"], cand["answer"]
    forms = [*cand["aliases"], *_parts(answer)]
    if category == "country-currency":
        for cur in facts.get("currency", []):
            last = cur["name"].split()[-1]  # "Albanian lek" -> "lek"
            forms += [cur["name"], cur["code"], *([last] if last != "soberano" else [])]
            forms += [*FORMER_CURRENCY_SUCCESSORS.get(cur["code"], []), *CURRENCY_COMMON_NAMES.get(cur["code"], [])]
    elif category == "country-subregion" and facts.get("region"):
        forms.append(facts["region"])
        if facts["region"] == "Americas":  # the continent: North America runs down to Panama
            forms += ["America", *(["North America"] if answer in NORTH_AMERICA else ["South America"])]
        forms += SUBREGION_COMMON_NAMES.get(answer, [])
    elif category == "country-demonym":
        for name in dict.fromkeys([answer, *_parts(answer)]):
            forms += _demonym_forms(name)
    elif category == "country-language":
        for lang in [answer, *facts.get("languages", []), *cand["aliases"]]:
            forms += LANGUAGE_COMMON_NAMES.get(lang, [])
    elif category == "country-capital":
        for city in [answer, *cand["aliases"]]:
            forms += CAPITAL_COMMON_NAMES.get(city, [])
    elif category == "element-period":
        forms.append(f"period {answer}")
    elif category.startswith("emoji-"):
        forms += _emoji_forms(answer, {t.strip() for t in facts.get("tags", "").split(",")})
    elif category == "brand-logo":
        forms += _brand_forms(answer)
    if category in ("country-flag", "country-outline", "wiki-capital_of"):
        forms += COUNTRY_SHORT_NAMES.get(answer, [])
    spelt = category.startswith("emoji-") or category == "country-currency"  # not ".ax" -> "axe"
    for form in [answer, *forms]:
        forms += [*([_british_american(form)] if spelt else []), *_saint(form)]
    for form in [answer, *forms]:
        forms += [_fold(form), form.replace("-", " "), _fold(form).replace("-", " ")]
    return [f for f in dict.fromkeys(forms) if f and f != answer and any(ch.isalnum() for ch in f)]


def _parts(name: str) -> list[str]:
    """The halves of "Persian (Farsi)", "Antiguan, Barbudan" or "Kittitian or Nevisian"."""
    if m := re.fullmatch(r"(.+?)\s*\((.+)\)", name):
        return [m[1], m[2]]
    for sep in (", ", " or "):
        if sep in name:
            return [p.strip() for p in name.split(sep) if p.strip()]
    return []


def _demonym_forms(name: str) -> list[str]:
    forms = [*DEMONYM_COMMON_FORMS.get(name, [])]
    if name.endswith("stani"):  # "Uzbekistani" -> "Uzbek": the usual word
        forms.append(name[: -len("istani")])
    out = []
    for form in [name, *forms]:
        out.append(form)
        if form.endswith(("chman", "shman", "xman")):
            out.append(form[: -len("man")] + "men")  # "Frenchman" -> "Frenchmen"
        elif (form[-1:] in "nie" and not form.endswith("ese")) or form.endswith(("er", "k", "b", "t")):
            out.append(form + "s")  # "Kenyan" -> "Kenyans", "Pole" -> "Poles", "Turk" -> "Turks"
    return out


def _british_american(text: str) -> str:
    return " ".join(_SPELLINGS.get(w, w) for w in text.split(" "))


def _saint(text: str) -> list[str]:
    """ "Saint John's" beside "St. John's" and "St John's", both ways round."""
    if re.search(r"\bSaint\b", text):
        return [re.sub(r"\bSaint\b", "St.", text), re.sub(r"\bSaint\b", "St", text)]
    if re.search(r"\bSt\.? ", text):
        return [re.sub(r"\bSt\.? ", "Saint ", text)]
    return []


def _plural(word: str) -> str:
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"  # "battery" -> "batteries"
    return word + ("es" if word.endswith(("s", "sh", "ch", "x", "z")) else "s")


def _singular(name: str) -> str | None:
    """ "grapes" -> "grape", "nesting dolls" -> "nesting doll"; None for a name that is not a plural."""
    last = name.split()[-1]
    if last in _PLURALE_TANTUM or not last.endswith("s") or last.endswith(("ss", "us", "is", "os")):
        return None
    if last.endswith("ies"):
        stem = last[:-3] + "y"  # "cherries" -> "cherry"
    else:
        stem = last[:-2] if last.endswith(("ches", "shes", "xes")) else last[:-1]
    return " ".join([*name.split()[:-1], stem])


def _emoji_forms(name: str, tags: set[str]) -> list[str]:
    forms = [*EMOJI_COMMON_NAMES.get(name, [])]
    if " with " in name:  # "camera with flash" is a camera: the head noun comes before "with"
        name = name.split(" with ")[0]
        forms.append(name)
    words = name.split()
    head_ok = words[-1] not in EMOJI_NO_HEAD and name not in EMOJI_NOT_ITS_HEAD and " and " not in name
    if len(words) > 1 and words[-1] in tags and head_ok:  # "glowing star" -> "star"
        forms.append(words[-1])
    if len(words) > 1 and words[-1] == "face":  # "dog face" is a dog
        forms.append(" ".join(words[:-1]))
    if len(words) == 2:
        forms.append("".join(words))  # "black bird" -> "blackbird"
    if not name.endswith("s"):  # "headphone" -> "headphones"
        forms.append(" ".join([*words[:-1], _plural(words[-1])]))
    elif singular := _singular(name):
        forms.append(singular)
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
    return [*forms, *BRAND_SHORT_NAMES.get(name, [])]


#: UN subregion names beside the names people use for them
SUBREGION_COMMON_NAMES = {
    "South-Eastern Asia": ["Southeast Asia", "South East Asia"], "Eastern Asia": ["East Asia"],
    "Western Asia": ["West Asia", "Middle East"], "Southern Asia": ["South Asia"],
    "Southeast Europe": ["Southeastern Europe", "South-Eastern Europe"], "Eastern Europe": ["East Europe"], "Western Europe": ["West Europe"],
    "Northern Africa": ["North Africa"], "Southern Africa": [], "Eastern Africa": ["East Africa"],
    "Western Africa": ["West Africa"], "Middle Africa": ["Central Africa"],
}  # fmt: skip
#: countries usually called by a shorter name than their title
COUNTRY_SHORT_NAMES = {
    "Bosnia and Herzegovina": ["Bosnia"], "United States": ["USA", "US", "United States of America", "America"],
    "United Kingdom": ["UK", "Britain", "Great Britain"], "Czechia": ["Czech Republic"], "Russia": ["Russian Federation"],
    "United Arab Emirates": ["UAE"], "Vatican City": ["Vatican", "Holy See"], "Myanmar": ["Burma"],
    "DR Congo": ["Democratic Republic of the Congo", "DRC", "Congo-Kinshasa"], "Timor-Leste": ["East Timor"],
    "Republic of the Congo": ["Congo", "Congo-Brazzaville"], "Ivory Coast": ["Côte d'Ivoire"], "Cape Verde": ["Cabo Verde"],
    "Eswatini": ["Swaziland"], "Turkey": ["Türkiye"], "Netherlands": ["Holland"], "North Macedonia": ["Macedonia"],
}  # fmt: skip
#: subregions of the Americas on the North American continent
NORTH_AMERICA = ("North America", "Central America", "Caribbean")


#: currencies a source still lists after they were replaced: code -> the successor's name and code
FORMER_CURRENCY_SUCCESSORS = {"ANG": ["Caribbean guilder", "XCG"]}
#: brands commonly named without their company-type word (a table, as "Japan Airlines" is not "Japan")
BRAND_SHORT_NAMES = {
    "Southwest Airlines": ["Southwest"], "Blackmagic Design": ["Blackmagic"], "Dassault Systèmes": ["Dassault"],
    "Take-Two Interactive Software": ["Take-Two", "Take-Two Interactive"], "Voron Design": ["Voron"],
    "Wikimedia Foundation": ["Wikimedia"], "OpenJS Foundation": ["OpenJS"], "MariaDB Foundation": ["MariaDB"],
    # the initials or short name a brand goes by
    "JSON Web Tokens": ["JWT"], "Common Workflow Language": ["CWL"], "Open Containers Initiative": ["OCI"],
    "Mock Service Worker": ["MSW"], "Home Assistant Community Store": ["HACS"], "New York Times": ["NYT"],
    "Thurgauer Kantonalbank": ["TKB"], "PlayStation Vita": ["PS Vita"], "scikit-learn": ["sklearn"],
    "IntelliJ IDEA": ["IntelliJ"], "GNU IceCat": ["IceCat"], "Travis CI": ["Travis"], "Beats by Dre": ["Beats"],
    "Craft CMS": ["Craft"], "Premier League": ["English Premier League", "EPL"],
}  # fmt: skip
#: nouns whose plural is not made with -s / -es
_IRREGULAR_PLURALS = {"mouse": "mice", "mosquito": "mosquitoes", "potato": "potatoes", "tomato": "tomatoes",
                      "knife": "knives", "leaf": "leaves", "cactus": "cacti", "moose": "moose", "sheep": "sheep",
                      "fish": "fish", "shrimp": "shrimp", "deer": "deer"}  # fmt: skip
#: plural-only names: "glasses" has no singular "glass"
_PLURALE_TANTUM = ("glasses", "sunglasses", "scissors", "arts", "pants", "trousers", "jeans", "shorts", "tongs", "fries", "clothes", "briefs",
                   "binoculars", "goggles")  # fmt: skip
_SPELLINGS = {**BRITISH_AMERICAN, **{v: k for k, v in BRITISH_AMERICAN.items()}}
