"""Rephrased instruction pools for the generation tasks (own wording).

MEIT samples one of many rephrasings of "write the report" per training example so the model
does not overfit one phrasing; GEM asks for an interpretation that cites measured features.
Evaluation and serving always use the first instruction of a pool.
"""

from __future__ import annotations

REPORT_INSTRUCTIONS: tuple[str, ...] = (
    "Write the diagnostic report for this 12-lead ECG.",
    "Produce a concise clinical report describing this electrocardiogram.",
    "Summarise the findings of this ECG the way a cardiologist would in a report.",
    "Describe the rhythm, conduction and any abnormalities seen on this ECG.",
    "What would the official interpretation of this ECG tracing say?",
    "Generate the report text that belongs to this 12-lead recording.",
    "Read this ECG and write down your interpretation.",
    "Give a short ECG report covering rhythm, intervals and abnormal findings.",
    "Interpret the electrocardiogram above in report form.",
    "Compose the machine-style interpretation statement for this ECG.",
    "Provide the findings for this resting 12-lead ECG.",
    "Report on this ECG: rhythm first, then any abnormality.",
    "As an ECG reader, write the report for this recording.",
    "List the diagnostic statements that apply to this ECG.",
    "Draft the clinical ECG report for the tracing shown.",
    "Explain what this 12-lead ECG shows, in the style of a formal report.",
    "Please write the interpretation of this ECG.",
    "Summarise this recording as a brief ECG report.",
    "Turn this ECG into a written diagnostic report.",
    "What are the key findings on this electrocardiogram? Answer as a report.",
    "Write an ECG interpretation suitable for the patient record.",
    "Describe this ECG for the medical chart.",
    "Give the cardiologist's reading of this 12-lead ECG.",
    "Characterise this electrocardiogram in a few report sentences.",
)
"""MEIT-style report instructions (the paper used a pool of 256; these are our own)."""

GROUNDING_INSTRUCTIONS: tuple[str, ...] = (
    "Interpret this ECG step by step: measure rate, intervals and waves, then state the "
    "diagnosis and the evidence for it.",
    "Give a grounded interpretation of this 12-lead ECG, citing the measured features and the "
    "leads where findings appear.",
    "Analyse this electrocardiogram. Report heart rate, PR, QRS, QT/QTc and wave amplitudes, "
    "then conclude with the diagnosis.",
    "Explain what this ECG shows, supporting every conclusion with a measurement.",
    "Walk through this ECG: rhythm and rate, conduction intervals, lead-specific findings, "
    "and the final impression.",
    "Describe the measurable features of this ECG and what they imply clinically.",
    "Provide an evidence-based reading of this ECG with numbers for each interval.",
    "Read this ECG like a cardiologist teaching a student: measurements first, diagnosis last.",
)
"""GEM-style grounded-interpretation instructions (own wording)."""


def instruction_pool(task: str, limit: int | None = None) -> tuple[str, ...]:
    """The pool of ``task`` (``report`` or ``grounding``), optionally its first ``limit``."""
    pools = {"report": REPORT_INSTRUCTIONS, "grounding": GROUNDING_INSTRUCTIONS}
    if task not in pools:
        raise ValueError(f"task: no instruction pool for {task!r}, expected one of "
                         f"{sorted(pools)}")
    pool = pools[task]
    return pool[:limit] if limit else pool
