"""Result figure of a pretraining run: loss curves and zero-shot AUC per superclass."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ecglm.pretrain.zeroshot import ZeroShotResult


def plot_pretrain(history: Mapping[str, Any], results: Mapping[str, ZeroShotResult],
                  path: str | Path) -> Path:
    """Write a PNG with two panels and return its path.

    Args:
        history: ``{"steps": [[step, train_loss], ...], "epochs": [{"step", "valid_loss",
            ...}, ...]}`` (``history.json`` of the checkpoint).
        results: split name -> zero-shot result (bars per class; classes without an AUC are
            drawn as empty slots and marked "n/a").
        path: output file.
    """
    # matplotlib deferred on purpose: the Agg backend must be chosen before pyplot is first
    # imported, and Ray workers importing this package never plot
    import matplotlib  # deferred on purpose: plotting runs once, at the end of pretraining

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
    steps = history.get("steps", [])
    if steps:
        ax_loss.plot([s for s, _ in steps], [v for _, v in steps], label="train (per step)",
                     color="tab:blue", lw=1)
    ep = [e for e in history.get("epochs", []) if e.get("valid_loss") is not None]
    if ep:
        ax_loss.plot([e["step"] for e in ep], [e["valid_loss"] for e in ep], "o-",
                     label="valid (per epoch)", color="tab:orange")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("SigLIP loss (sum over pairs / batch)")
    ax_loss.set_title("Loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)

    classes = list(next(iter(results.values())).per_class) if results else []
    width = 0.8 / max(len(results), 1)
    for k, (split, res) in enumerate(results.items()):
        xs = [i + (k - (len(results) - 1) / 2) * width for i in range(len(classes))]
        vals = [res.per_class[c] if res.per_class[c] is not None else 0.0 for c in classes]
        bars = ax_auc.bar(xs, vals, width, label=f"{split} (macro {res.macro_auc:.3f}, "
                                                  f"n={res.n_records})")
        for bar, c in zip(bars, classes):
            txt = "n/a" if res.per_class[c] is None else f"{res.per_class[c]:.2f}"
            ax_auc.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, txt,
                        ha="center", va="bottom", fontsize=7)
    ax_auc.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax_auc.set_xticks(range(len(classes)), classes)
    ax_auc.set_ylabel("ROC AUC")
    ax_auc.set_title("Zero-shot superclass AUC (cosine to label prompts)")
    ax_auc.set_ylim(0, 1.22)  # room above the bars for the one-row legend
    ax_auc.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax_auc.legend(fontsize=8, loc="upper center", ncol=3, framealpha=0.9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
