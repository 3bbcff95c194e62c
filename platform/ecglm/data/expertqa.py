"""ECG-Expert-QA (text benchmark): JSON lists per task, in any of the released schemas.

Single-turn items (keys exactly):

* ``{"Q", "A"}``
* ``{"Disease", "Q", "A"}``        (context: the disease)
* ``{"medical_advice", "Q", "A"}`` (context: the advice given to the patient)
* ``{"Question", "Answer"}``

Multi-turn dialogues:

* a list of single-turn objects (``{"Q", "A"}`` or ``{"Question", "Answer"}``);
* an object with one turn list under ``dialogue``/``dialog``/``turns``/``conversation``/
  ``conversations``/``rounds`` (optionally with ``Disease`` or ``medical_advice``);
* a turn list of chat messages (``{"role", "content"}`` or ShareGPT ``{"from", "value"}``)
  alternating user/assistant.

Anything else raises :class:`CatalogError` naming the file, the item and the keys found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecglm.data.errors import CatalogError

SINGLE_SCHEMAS: dict[frozenset[str], tuple[str, str, str | None]] = {
    frozenset({"Q", "A"}): ("Q", "A", None),
    frozenset({"Disease", "Q", "A"}): ("Q", "A", "Disease"),
    frozenset({"medical_advice", "Q", "A"}): ("Q", "A", "medical_advice"),
    frozenset({"Question", "Answer"}): ("Question", "Answer", None),
}
"""Key set -> (question key, answer key, context key)."""
DIALOGUE_KEYS: tuple[str, ...] = ("dialogue", "dialog", "turns", "conversation",
                                  "conversations", "rounds")
_USER_ROLES = {"user", "human", "patient", "doctor_question"}
_ASSISTANT_ROLES = {"assistant", "gpt", "doctor", "model"}


@dataclass(frozen=True)
class Turn:
    """One question and its reference answer."""

    question: str
    answer: str


@dataclass
class ExpertQAItem:
    """One benchmark item: a single question (one turn) or a dialogue (several turns)."""

    item_id: str
    """``<task>:<index>``."""
    task: str
    """Task name: the file name without ``.json``."""
    schema: str
    """``Q-A``, ``Disease-Q-A``, ``medical_advice-Q-A``, ``Question-Answer`` or ``dialogue``."""
    turns: list[Turn]
    context: str = ""
    """Disease name or medical advice the question refers to (``""`` when none)."""
    context_kind: str = ""
    """``Disease``, ``medical_advice`` or ``""``."""
    metadata: dict[str, Any] = field(default_factory=dict)


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(where, key, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _single(raw: dict, where: str) -> tuple[Turn, str, str, str]:
    """(turn, schema name, context, context kind) of a single-turn object."""
    keys = frozenset(raw)
    if keys not in SINGLE_SCHEMAS:
        raise CatalogError(where, "keys", f"got {sorted(keys)}, expected one of "
                                          f"{[sorted(k) for k in SINGLE_SCHEMAS]} or a dialogue")
    q, a, ctx = SINGLE_SCHEMAS[keys]
    turn = Turn(_text(raw[q], where, q), _text(raw[a], where, a))
    context = _text(raw[ctx], where, ctx) if ctx else ""
    name = "-".join([ctx, q, a] if ctx else [q, a])
    return turn, name, context, ctx or ""


def _messages(turns: list, where: str) -> list[Turn]:
    """Alternating user/assistant chat messages -> turns."""
    out: list[Turn] = []
    pending: str | None = None
    for i, msg in enumerate(turns):
        role_key, text_key = ("role", "content") if "role" in msg else ("from", "value")
        if set(msg) != {role_key, text_key}:
            raise CatalogError(f"{where}: turn {i}", "keys", f"got {sorted(msg)}, expected "
                                                              f"role+content or from+value")
        role = str(msg[role_key]).lower()
        text = _text(msg[text_key], f"{where}: turn {i}", text_key)
        if role in _USER_ROLES and pending is None:
            pending = text
        elif role in _ASSISTANT_ROLES and pending is not None:
            out.append(Turn(pending, text))
            pending = None
        else:
            raise CatalogError(f"{where}: turn {i}", role_key, f"role {role!r} out of order: "
                                                               f"expected user/assistant "
                                                               f"alternating")
    if pending is not None or not out:
        raise CatalogError(where, "turns", "dialogue must end with an answer and hold >= 1 turn")
    return out


def _dialogue(turns: Any, where: str) -> list[Turn]:
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        raise CatalogError(where, "turns", f"expected a non-empty list of objects, got "
                                           f"{type(turns).__name__}")
    if all(("role" in t or "from" in t) for t in turns):
        return _messages(turns, where)
    out = []
    for i, t in enumerate(turns):
        turn, name, context, _ = _single(t, f"{where}: turn {i}")
        if context:
            raise CatalogError(f"{where}: turn {i}", "keys", f"schema {name} inside a dialogue; "
                                                             f"expected Q+A or Question+Answer")
        out.append(turn)
    return out


def parse_expert_item(raw: Any, task: str, index: int, where: str) -> ExpertQAItem:
    """Validate one JSON value of an ECG-Expert-QA file (see the module docstring)."""
    where = f"{where}: item {index}"
    item_id = f"{task}:{index}"
    if isinstance(raw, list):
        return ExpertQAItem(item_id, task, "dialogue", _dialogue(raw, where))
    if not isinstance(raw, dict):
        raise CatalogError(where, "<item>", f"expected an object or a turn list, got "
                                            f"{type(raw).__name__}")
    lists = [k for k in DIALOGUE_KEYS if k in raw]
    if lists:
        rest = set(raw) - {lists[0]}
        if len(lists) > 1 or not rest <= {"Disease", "medical_advice"} or len(rest) > 1:
            raise CatalogError(where, "keys", f"got {sorted(raw)}, expected one of "
                                              f"{list(DIALOGUE_KEYS)} plus at most one of "
                                              f"Disease/medical_advice")
        ctx = next(iter(rest), "")
        return ExpertQAItem(item_id, task, "dialogue", _dialogue(raw[lists[0]], where),
                            context=_text(raw[ctx], where, ctx) if ctx else "",
                            context_kind=ctx)
    turn, name, context, kind = _single(raw, where)
    return ExpertQAItem(item_id, task, name, [turn], context=context, context_kind=kind)


def load_expert_qa(path: Path) -> list[ExpertQAItem]:
    """Items of one ECG-Expert-QA JSON file, or of every ``*.json`` in a folder (name order).

    Raises:
        FileNotFoundError: nothing at ``path``.
        CatalogError: invalid JSON, not a list, or an item in no known schema.
    """
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"{path}: no ECG-Expert-QA JSON found")
    items: list[ExpertQAItem] = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CatalogError(str(f), "<json>", f"invalid JSON: {exc}") from exc
        if not isinstance(data, list):
            raise CatalogError(str(f), "<root>", f"expected a JSON list, got "
                                                 f"{type(data).__name__}")
        items.extend(parse_expert_item(raw, f.stem, i, str(f)) for i, raw in enumerate(data))
    return items
