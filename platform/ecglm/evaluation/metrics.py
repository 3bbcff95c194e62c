"""All evaluation metrics behind one import.

Text generation (hypotheses vs one or more references per item):

* :func:`text_metrics` -> ``bleu1..bleu4``, ``cider_d``, ``rouge_l`` (coco-caption
  tokenisation, as the papers compute them), ``meteor`` (nltk definition, WordNet),
  ``rouge1``/``rouge2`` (F1, rouge-score tokenisation), optionally ``bertscore_p/r/f1``.
  Implementations: :mod:`ecglm.evaluation.nlg`, :mod:`ecglm.evaluation.bertscore`.

Set-valued QA answers: :func:`exact_match` and :func:`em_scores` (per question type and
attribute type; from :mod:`ecglm.evaluation.qa`).

Multi-label classification (scores/labels of shape (N, C)): :func:`classification_metrics`
-> ``macro_auc``, ``macro_f1``, ``hamming_loss``, ``subset_accuracy``. Label columns with a
single class in ``y_true`` are dropped (with a warning) from AUC and F1, which are undefined
or degenerate for them; Hamming loss and subset accuracy use every column.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np
from scipy.stats import rankdata

from ecglm.evaluation.bertscore import BertScorer
from ecglm.evaluation.nlg import Meteor, bleu, cider_d, rouge_l, rouge_n
from ecglm.evaluation.qa import exact_match
from ecglm.evaluation.qa import score as em_scores
from ecglm.evaluation.resources import load_wordnet, ptb_tokenize

__all__ = ["text_metrics", "exact_match", "em_scores", "classification_metrics",
           "binary_auc", "TextScorer"]


class TextScorer:
    """Holds the resources of the text metrics (WordNet, BERTScore encoder) across calls.

    Args:
        bertscore_model: encoder folder for BERTScore (None: offline MiniLM-L6).
        bertscore_layers: hidden layer used by BERTScore.
        use_bertscore: compute BERTScore (loads the encoder on first use).
    """

    def __init__(self, bertscore_model: Optional[str] = None, bertscore_layers: int = 6,
                 use_bertscore: bool = True) -> None:
        self.bertscore_model = bertscore_model
        self.bertscore_layers = bertscore_layers
        self.use_bertscore = use_bertscore
        self._meteor: Optional[Meteor] = None
        self._bert: Any = None

    @property
    def meteor(self) -> Meteor:
        if self._meteor is None:
            self._meteor = Meteor(load_wordnet())
        return self._meteor

    @property
    def bert(self) -> Any:
        if self._bert is None:

            self._bert = BertScorer(self.bertscore_model, self.bertscore_layers)
        return self._bert

    def score(self, hyps: Sequence[str], refs: Sequence[Sequence[str] | str],
              per_item: bool = False) -> dict[str, Any]:
        """All text metrics of N hypotheses against their references.

        Args:
            hyps: N generated texts (raw).
            refs: N references, each a string or a list of strings (raw).
            per_item: also return ``"per_item"``: a dict of metric -> list of N floats.

        Returns:
            metric name -> corpus-level value (BLEU: corpus BLEU; others: mean over items).
        """
        ref_lists = [[r] if isinstance(r, str) else list(r) for r in refs]
        if len(hyps) != len(ref_lists):
            raise ValueError(f"text_metrics: {len(hyps)} hypotheses, {len(ref_lists)} refs")
        if not hyps:
            return {}
        flat = ptb_tokenize(list(hyps) + [r for rs in ref_lists for r in rs])
        tok_h, pos, tok_r = flat[: len(hyps)], len(hyps), []
        for rs in ref_lists:
            tok_r.append(flat[pos:pos + len(rs)])
            pos += len(rs)
        out: dict[str, Any] = {}
        items: dict[str, list[float]] = {}
        b, b_items = bleu(tok_h, tok_r, 4)
        for k in range(4):
            out[f"bleu{k + 1}"] = b[k]
            items[f"bleu{k + 1}"] = b_items[:, k].tolist()
        out["cider_d"], c_items = cider_d(tok_h, tok_r)
        out["rouge_l"], l_items = rouge_l(tok_h, tok_r)
        out["meteor"], m_items = self.meteor.score(tok_h, tok_r)
        items.update(cider_d=c_items.tolist(), rouge_l=l_items.tolist(),
                     meteor=m_items.tolist())
        for n in (1, 2):
            r, r_items = rouge_n(hyps, ref_lists, n)
            out[f"rouge{n}"] = r["f1"]
            items[f"rouge{n}"] = r_items[:, 2].tolist()
        if self.use_bertscore:
            bs, bs_items = self.bert.score(hyps, ref_lists)
            out.update(bertscore_p=bs["precision"], bertscore_r=bs["recall"],
                       bertscore_f1=bs["f1"])
            items["bertscore_f1"] = bs_items[:, 2].tolist()
        if per_item:
            out["per_item"] = items
        return out


def text_metrics(hyps: Sequence[str], refs: Sequence[Sequence[str] | str],
                 use_bertscore: bool = True, bertscore_model: Optional[str] = None
                 ) -> dict[str, Any]:
    """One-shot :meth:`TextScorer.score` (loads WordNet / the encoder each call)."""
    return TextScorer(bertscore_model, use_bertscore=use_bertscore).score(hyps, refs)


def binary_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of one label: Mann-Whitney U with mid-ranks for ties.

    Args:
        y: (N,) 0/1 truth with both classes present. s: (N,) scores (higher = positive).
    """
    y = np.asarray(y).astype(bool)
    ranks = rankdata(np.asarray(s, dtype=np.float64))
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, y_score: Optional[np.ndarray] = None,
                           y_pred: Optional[np.ndarray] = None, threshold: float = 0.5,
                           label_names: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Multi-label metrics.

    Args:
        y_true: (N, C) 0/1 truth.
        y_score: (N, C) scores/probabilities (for AUC; thresholded when ``y_pred`` is None).
        y_pred: (N, C) 0/1 predictions (e.g. labels extracted from generated text).
        threshold: ``y_pred = y_score >= threshold`` when no ``y_pred`` is given.
        label_names: C names, used in the warning about dropped columns.

    Returns:
        ``macro_auc`` (needs ``y_score``), ``macro_f1``, ``hamming_loss``,
        ``subset_accuracy``, ``n_labels_used`` (columns kept for AUC/F1).
    """
    yt = np.asarray(y_true).astype(int)
    if yt.ndim != 2:
        raise ValueError(f"classification_metrics: y_true must be (N, C), got {yt.shape}")
    if y_pred is None and y_score is None:
        raise ValueError("classification_metrics: give y_score or y_pred")
    yp = (np.asarray(y_pred).astype(int) if y_pred is not None
          else (np.asarray(y_score) >= threshold).astype(int))
    if yp.shape != yt.shape:
        raise ValueError(f"classification_metrics: y_pred {yp.shape} != y_true {yt.shape}")
    names = list(label_names) if label_names is not None else [str(i) for i in
                                                               range(yt.shape[1])]
    both = [(yt[:, c].min() != yt[:, c].max()) for c in range(yt.shape[1])]
    dropped = [names[c] for c, ok in enumerate(both) if not ok]
    if dropped:
        warnings.warn(f"classification_metrics: label columns {dropped} have a single class in "
                      "y_true; dropped from macro AUC and macro F1", RuntimeWarning, stacklevel=2)
    keep = [c for c, ok in enumerate(both) if ok]
    out: dict[str, float] = {"n_labels_used": float(len(keep))}
    if y_score is not None and keep:
        ys = np.asarray(y_score, dtype=np.float64)
        out["macro_auc"] = float(np.mean([binary_auc(yt[:, c], ys[:, c]) for c in keep]))
    if keep:
        f1s = []
        for c in keep:
            tp = int(((yp[:, c] == 1) & (yt[:, c] == 1)).sum())
            fp = int(((yp[:, c] == 1) & (yt[:, c] == 0)).sum())
            fn = int(((yp[:, c] == 0) & (yt[:, c] == 1)).sum())
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        out["macro_f1"] = float(np.mean(f1s))
    out["hamming_loss"] = float((yp != yt).mean())
    out["subset_accuracy"] = float((yp == yt).all(axis=1).mean())
    return out
