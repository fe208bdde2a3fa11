"""The offline analyst building on an earlier project: "like my expenses bot, but for my team".

Without a model nothing can merge two descriptions, so the rules do the honest part: when the
request refers to an earlier project ("like my …", "same as …", "как мой …", "такой же …")
and the user's memory holds an earlier spec, that spec is the new project's base, unchanged,
and its summary says so, labelled offline, with the part of the request the rules did not
interpret. An earlier spec stored as its JSON is reused field for field; stored as prose, it
is read by the rules together with the new request. No reference, or no earlier spec: the
ordinary rules decide.
"""

# Cyrillic phrases are this module's data, not look-alike typos.
# ruff: noqa: RUF001

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import ValidationError

from contracts.fields import MAX_TEXT
from contracts.spec import ProjectSpec
from infra.memory_types import MemoryKind

from . import rules
from .spec_policy import enforce
from .state import Recalled

_REFERENCE = re.compile(
    r"\b(?:like|same as|similar to|based on|just like|copy of) (?:my|our|the one)\b"
    r"|\bsame as\b"
    r"|(?<!\w)(?:как|типа|аналог(?:ичн\w*)?|по образцу)\s+(?:у\s+)?(?:мо[йяеёи]\w*|наш\w*)"
    r"|(?<!\w)(?:такой|такую|такое|такие) же\b",
    re.IGNORECASE,
)
_SPEC_KINDS = (MemoryKind.SPEC.value, MemoryKind.SPEC_REVISION.value)


def refers_to_earlier(text: str) -> bool:
    """True when the request points at an earlier project of the user's."""
    return _REFERENCE.search(text) is not None


def build_on_earlier(
    description: str, answers: Sequence[str], recalled: Sequence[Recalled]
) -> ProjectSpec | None:
    """A spec built on the best earlier spec, or None when the rules alone should decide."""
    request = " ".join([description, *answers]).strip()
    if not refers_to_earlier(request):
        return None
    earlier = next((item for item in recalled if item["kind"] in _SPEC_KINDS), None)
    if earlier is None:
        return None
    language = rules.detect_language(description)
    base = _spec_from(earlier["text"])
    if base is None:
        decision = rules.decide(f"{request}\n{earlier['text']}", list(answers))
        if isinstance(decision, rules.Question):
            return None
        base = decision
    note = (
        f"{rules.OFFLINE_PREFIX}Сделано на основе вашего проекта «{base.name}»: его "
        "спецификация взята без изменений, потому что без языковой модели остальная часть "
        f"запроса не разбирается: «{request[:500]}»."
        if language == "ru"
        else f"{rules.OFFLINE_PREFIX}Built on your earlier project “{base.name}”: its spec is "
        "reused unchanged, because without a language model the rest of the request is not "
        f"interpreted: “{request[:500]}”."
    )
    summary = f"{note} {base.summary}"[:MAX_TEXT]
    return enforce(ProjectSpec.model_validate({**base.model_dump(), "summary": summary}))


def _spec_from(text: str) -> ProjectSpec | None:
    """The spec a memory text holds as JSON (alone or inside prose), or None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        return ProjectSpec.model_validate_json(text[start : end + 1])
    except (ValidationError, ValueError):
        return None
