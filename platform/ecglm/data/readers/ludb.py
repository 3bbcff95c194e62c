"""LUDB (Lobachevsky University Database): 12-lead WFDB records with expert P/QRS/T
delineation stored per lead as WFDB annotation files ``<record>.i``, ``.ii``, ... ``.v6``.

Each wave is annotated as the triplet ``(`` onset, peak symbol (``p``, ``N``, ``t``), ``)``
offset; sample indices are at the record's rate (500 Hz).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import wfdb

from ecglm.data.canonical import LEADS, RawECG
from ecglm.data.errors import RecordError
from ecglm.data.readers.header_checks import DEFAULT_LIMITS, HeaderLimits
from ecglm.data.readers.wfdb_format import read_wfdb_raw

WAVE_TYPES: dict[str, str] = {"p": "P", "N": "QRS", "t": "T"}
"""LUDB peak symbol -> wave name."""
ANNOTATION_EXTENSIONS: tuple[str, ...] = tuple(lead.lower() for lead in LEADS)
"""Annotation file extension of each lead (``i`` ... ``avr`` ... ``v6``), in :data:`LEADS` order."""


@dataclass(frozen=True)
class Wave:
    """One annotated wave; samples at the record's rate (``onset``/``offset`` ``None`` when the
    annotation lacks the bracket, e.g. at the record edges)."""

    kind: str
    """``P``, ``QRS`` or ``T``."""
    onset: int | None
    peak: int
    offset: int | None


def has_wave_annotations(path: str | Path) -> bool:
    """Whether LUDB-style per-lead annotation files exist next to record ``path``."""
    return Path(f"{path}.ii").is_file() or Path(f"{path}.i").is_file()


def parse_waves(symbols: list[str], samples: list[int], record: str, lead: str) -> list[Wave]:
    """Group ``(`` / peak / ``)`` annotations into :class:`Wave` objects.

    Raises:
        RecordError: a peak symbol other than ``p``/``N``/``t`` (``annotations``).
    """
    waves: list[Wave] = []
    onset: int | None = None
    current: tuple[str, int] | None = None
    for sym, s in zip(symbols, samples):
        if sym == "(":
            if current is not None:  # previous wave had no ')'
                waves.append(Wave(current[0], onset, current[1], None))
                current = None
            onset = int(s)
        elif sym == ")":
            if current is not None:
                waves.append(Wave(current[0], onset, current[1], int(s)))
            current, onset = None, None
        elif sym in WAVE_TYPES:
            if current is not None:
                waves.append(Wave(current[0], onset, current[1], None))
                onset = None
            current = (WAVE_TYPES[sym], int(s))
        else:
            raise RecordError(record, "annotations", f"lead {lead}: unknown symbol {sym!r} at "
                                                     f"sample {s}, expected one of ( ) p N t")
    if current is not None:
        waves.append(Wave(current[0], onset, current[1], None))
    return waves


def read_wave_annotations(path: str | Path) -> dict[str, list[Wave]]:
    """Per-lead delineation of LUDB record ``path`` (no extension): ``{lead: [Wave, ...]}`` for
    every lead of :data:`LEADS` whose annotation file exists.

    Raises:
        RecordError: no annotation file at all, or an unreadable one (``annotations``).
    """
    record = str(path)
    out: dict[str, list[Wave]] = {}
    for lead, ext in zip(LEADS, ANNOTATION_EXTENSIONS):
        if not Path(f"{record}.{ext}").is_file():
            continue
        try:
            ann = wfdb.rdann(record, ext)
        except Exception as exc:
            raise RecordError(record, "annotations", f"unreadable annotation file "
                                                     f"{record}.{ext}: {type(exc).__name__}: "
                                                     f"{exc}") from exc
        out[lead] = parse_waves(list(ann.symbol), [int(s) for s in ann.sample], record, lead)
    if not out:
        raise RecordError(record, "annotations", f"no annotation file {record}.<lead> found "
                                                 f"(expected extensions {ANNOTATION_EXTENSIONS})")
    return out


def diagnoses_from_comments(comments: list[str]) -> list[str]:
    """LUDB header comments after ``<diagnoses>:`` (one statement per line, ``.`` stripped)."""
    out: list[str] = []
    seen = False
    for line in comments:
        if line.strip().lower().startswith("<diagnoses>"):
            seen = True
            continue
        if seen and line.strip():
            out.append(line.strip().rstrip("."))
    return out


def read_ludb(path: str | Path, limits: HeaderLimits = DEFAULT_LIMITS) -> RawECG:
    """LUDB record with its annotations: :func:`read_wfdb_raw` plus metadata ``diagnoses``
    (list of statements) and ``waves`` (``{lead: [{kind, onset, peak, offset}]}``, samples at
    ``fs``); ``patient_id`` is the record number (one record per patient in LUDB); ``limits``
    as in :func:`read_wfdb_raw`."""
    raw = read_wfdb_raw(path, limits)
    raw.metadata["diagnoses"] = diagnoses_from_comments(raw.metadata.get("comments", []))
    raw.metadata["waves"] = {lead: [asdict(w) for w in waves]
                             for lead, waves in read_wave_annotations(path).items()}
    raw.metadata["format"] = "ludb"
    raw.patient_id = Path(str(path)).name
    return raw
