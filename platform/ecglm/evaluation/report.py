"""Self-contained HTML evaluation report: plots are embedded as base64 PNG (matplotlib, Agg).

Sections: headline table (model vs baselines), exact match per question type, confusion
matrix of verify questions, and example ECGs with question, gold answer, prediction and the
retrieved reports.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import matplotlib
import numpy as np

from ecglm.data.sharding import decode_signals
from ecglm.evaluation.qa import Prediction

matplotlib.use("Agg")  # files only, never a window (set before pyplot is imported)
import matplotlib.pyplot as plt  # noqa: E402

VERIFY_LABELS = ["yes", "no", "not sure", "other"]
LEAD_NAMES = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _plt() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend."""
    return plt


def fig_to_data_uri(fig: Any, close: bool = True) -> str:
    """PNG data URI of a matplotlib figure (closed unless ``close`` is False)."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    if close:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def metric_bars(systems: Mapping[str, Mapping[str, Any]], keys: Sequence[str], title: str,
                size: tuple[float, float] = (7, 3.2)) -> Any:
    """Grouped bars (0-1 axis) of ``keys`` per system, for the keys some system has (a
    matplotlib figure)."""
    keys = [k for k in keys if any(k in m for m in systems.values())]
    fig, ax = plt.subplots(figsize=size)
    width = 0.8 / max(len(systems), 1)
    for j, (name, m) in enumerate(systems.items()):
        ax.bar(np.arange(len(keys)) + j * width, [float(m.get(k, np.nan)) for k in keys],
               width, label=name)
    ax.set_xticks(np.arange(len(keys)) + width * (len(systems) - 1) / 2, keys)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def em_comparison_figure(systems: dict[str, dict[str, float]],
                         title: str = "Exact match per question type") -> Any:
    """Grouped bars: exact match per question type (x) for each system (model, baselines);
    returns the open matplotlib figure."""
    plt = _plt()
    types = sorted({k[3:] for m in systems.values() for k in m
                    if k.startswith("em/") and k.count("/") == 1} - {"overall", "type_avg"})
    types += ["overall"]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(systems), 1)
    for i, (name, m) in enumerate(systems.items()):
        vals = [m.get(f"em/{t}", 0.0) for t in types]
        ax.bar(np.arange(len(types)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(types)) + 0.4 - width / 2, types, rotation=25, ha="right",
                  fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("exact match")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def em_comparison_plot(systems: dict[str, dict[str, float]]) -> str:
    """:func:`em_comparison_figure` as a PNG data URI (for the HTML report)."""
    return fig_to_data_uri(em_comparison_figure(systems))


def verify_confusion(preds: Sequence[Prediction]) -> np.ndarray:
    """(4, 4) counts, rows = gold, columns = prediction, over ``VERIFY_LABELS`` for questions
    whose type ends in ``verify`` (anything but a single yes/no/not sure is ``other``)."""
    idx = {k: i for i, k in enumerate(VERIFY_LABELS)}

    def lab(ans: Sequence[str]) -> int:
        s = {a.strip().lower() for a in ans}
        return idx[next(iter(s))] if len(s) == 1 and next(iter(s)) in idx else idx["other"]

    cm = np.zeros((4, 4), dtype=int)
    for p in preds:
        if p.question_type.endswith("verify"):
            cm[lab(p.gold), lab(p.parsed)] += 1
    return cm


def confusion_plot(cms: dict[str, np.ndarray]) -> str:
    """One confusion-matrix panel per system."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(cms), figsize=(3.6 * len(cms), 3.4), squeeze=False)
    for ax, (name, cm) in zip(axes[0], cms.items()):
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9,
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(4), VERIFY_LABELS, fontsize=7, rotation=20)
        ax.set_yticks(range(4), VERIFY_LABELS, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        ax.set_title(f"{name}: verify questions", fontsize=9)
    fig.tight_layout()
    return fig_to_data_uri(fig)


def ecg_plot(signal: np.ndarray, fs: float, title: str) -> str:
    """12-lead plot of one ECG.

    Args:
        signal: (12, T) in mV. fs: sampling rate in Hz.
    """
    plt = _plt()
    t = np.arange(signal.shape[1]) / fs
    fig, axes = plt.subplots(6, 2, figsize=(10, 5.5), sharex=True)
    for k, ax in enumerate(axes.T.flatten()):
        ax.plot(t, signal[k], lw=0.6, color="#1f3b73")
        ax.set_ylabel(LEAD_NAMES[k], fontsize=7, rotation=0, labelpad=12)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig_to_data_uri(fig)


def curve_plot(xs: Sequence[float], series: dict[str, Sequence[float]], xlabel: str,
               ylabel: str, title: str) -> str:
    """Line plot of metric vs a setting (e.g. exact match vs SNR in dB)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig_to_data_uri(fig)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:20px auto;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #bbb;padding:3px 8px;
font-size:13px}th{background:#eee}img{max-width:100%;border:1px solid #ddd}
.ex{border:1px solid #ccc;padding:8px;margin:12px 0}.ok{color:#1a7f37}.bad{color:#b42318}
pre{white-space:pre-wrap;font-size:12px;background:#f7f7f7;padding:6px}"""


def write_report(path: Path, title: str, info: dict[str, Any],
                 systems: dict[str, list[Prediction]], metrics: dict[str, dict[str, float]],
                 examples: Sequence[dict[str, Any]] = (),
                 extra_sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write :func:`render_report` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(title, info, systems, metrics, examples, extra_sections),
                    encoding="utf-8")
    return path


def render_report(title: str, info: dict[str, Any], systems: dict[str, list[Prediction]],
                  metrics: dict[str, dict[str, float]], examples: Sequence[dict[str, Any]] = (),
                  extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """The HTML QA report.

    Args:
        info: key -> value shown at the top (checkpoint, run id, split...).
        systems: system name (model first, then baselines) -> its predictions.
        metrics: system name -> its metric dict (``em/...``).
        examples: dicts with ``signal`` ((12, T) mV), ``fs``, ``prediction`` (a Prediction) and
            ``reports`` (retrieved reports).
        extra_sections: (heading, HTML) pairs appended at the end (e.g. noise curves).
    """
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append(_table([[k, v] for k, v in info.items()], ["", ""]))
    keys = ["em/overall", "em/type_avg", "n/overall"]
    parts.append("<h2>Headline</h2>" + _table(
        [[name] + [m.get(k, float("nan")) for k in keys] for name, m in metrics.items()],
        ["system"] + keys))
    parts.append(f"<h2>Exact match per question type</h2><img alt='em per type' "
                 f"src='{em_comparison_plot(metrics)}'>")
    attrs = sorted({k for m in metrics.values() for k in m if k.startswith("em/attr/")})
    if attrs:
        parts.append("<h3>Per attribute type</h3>" + _table(
            [[a[8:]] + [metrics[s].get(a, float("nan")) for s in metrics] for a in attrs],
            ["attribute"] + list(metrics)))
    cms = {name: verify_confusion(p) for name, p in systems.items()}
    if any(cm.sum() for cm in cms.values()):
        parts.append(f"<h2>Verify questions: confusion matrices</h2><img alt='confusion' "
                     f"src='{confusion_plot(cms)}'>")
    if examples:
        parts.append("<h2>Examples</h2>")
    for ex in examples:
        p: Prediction = ex["prediction"]
        cls = "ok" if p.correct else "bad"
        reports = "".join(f"<li>{html.escape(r)}</li>" for r in ex.get("reports", []))
        parts.append(
            f"<div class='ex'><img alt='ecg {p.sample_id}' src='"
            f"{ecg_plot(ex['signal'], ex['fs'], f'sample {p.sample_id}')}'>"
            f"<p><b>Question</b> ({html.escape(p.question_type)}): {html.escape(p.question)}</p>"
            f"<p><b>Gold</b>: {html.escape(', '.join(p.gold))} &nbsp; <b>Prediction</b>: "
            f"<span class='{cls}'>{html.escape(', '.join(p.parsed) or '(unparsed)')}</span></p>"
            f"<pre>generated: {html.escape(p.generated)}</pre>"
            f"<p><b>Retrieved reports</b></p><ul>{reports or '<li>(none)</li>'}</ul></div>")
    for heading, body in extra_sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>")
    return "\n".join(parts)


def pick_examples(rows: Sequence[Any], preds: Sequence[Prediction], fs: float, n: int,
                  decode: Optional[Any] = None) -> list[dict[str, Any]]:
    """Up to ``n`` examples (first ECG of each row), alternating correct and wrong answers."""
    if n <= 0:
        return []
    decode = decode or decode_signals
    good = [p for p in preds if p.correct]
    bad = [p for p in preds if not p.correct]
    chosen: list[Prediction] = []
    while len(chosen) < n and (good or bad):
        for pool in (bad, good):
            if pool and len(chosen) < n:
                chosen.append(pool.pop(0))
    wanted = {int(p.sample_id) for p in chosen}
    by_id = {int(r.sample_id): r for r in rows if int(r.sample_id) in wanted}  # one pass
    out = []
    for p in chosen:
        r = by_id[p.sample_id]
        sig = decode(r.signals, int(r.n_ecg), int(r.n_samples))[0]
        out.append({"signal": sig, "fs": fs, "prediction": p,
                    "reports": [str(x) for x in r.retrieved_reports]})
    return out
