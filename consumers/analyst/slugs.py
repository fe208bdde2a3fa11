"""Repo- and DNS-safe slugs from project names in any script (Cyrillic is transliterated).

The slug names the repository, the deploy directory and the service's URL, so it must match
`ProjectSpec.slug`'s pattern whichever analyst (rules or LLM) proposed it.
"""

# Cyrillic letters are this module's data, not look-alike typos.
# ruff: noqa: RUF001

from __future__ import annotations

import re
import unicodedata

#: Russian (and Ukrainian/Belarusian letters close to it) in a BGN/PCGN-like romanisation that
#: reads naturally in a URL: "Расходы" -> "raskhody".
_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
    "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya", "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u",
}  # fmt: skip

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,48}[a-z0-9]$")
MAX_SLUG_LENGTH = 50


def transliterate(text: str) -> str:
    """Latin letters for `text`: Cyrillic by the table above, other accents stripped."""
    latin = "".join(_CYRILLIC.get(char, char) for char in text.lower())
    decomposed = unicodedata.normalize("NFKD", latin)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def slugify(text: str, fallback: str = "project") -> str:
    """A slug matching `SLUG_PATTERN` for `text`; `fallback` when nothing usable remains."""
    slug = re.sub(r"[^a-z0-9]+", "-", transliterate(text)).strip("-")
    slug = re.sub(r"^[0-9-]+", "", slug)
    slug = slug[:MAX_SLUG_LENGTH].strip("-")
    if len(slug) < 3:
        slug = f"{fallback}-{slug}".strip("-") if slug else fallback
    if not SLUG_PATTERN.match(slug):
        return fallback
    return slug


def is_valid_slug(slug: str) -> bool:
    return bool(SLUG_PATTERN.match(slug))
