"""Benchmark the evaluation metrics: agreement with reference implementations and speed.

Scores N generated/reference report pairs (default 1,000; ``--quick``: 100) with our metrics
and with the references (pycocoevalcap BLEU/CIDEr-D/ROUGE-L, nltk METEOR, rouge-score
ROUGE-1/2, bert_score, scikit-learn AUC/F1/Hamming, a recount for EM). Prints one JSON headline
as the last line: ``max_abs_diff_vs_reference`` (metric -> max |ours - reference| over items),
``pairs_per_s`` (our full text-metric pass, generation excluded) and ``seconds``.

Usage: ``python jobs/bench/metrics.py [--quick] [--n N] [--no-bertscore]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 pairs")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--no-bertscore", action="store_true")
    args = ap.parse_args()
    n = 100 if args.quick else args.n

    from ecglm.evaluation import nlg
    from ecglm.evaluation.metrics import TextScorer, classification_metrics
    from ecglm.evaluation.resources import ptb_tokenize
    from tests.helpers import make_pairs

    hyps, refs = make_pairs(n, seed=7, max_refs=2)
    scorer = TextScorer(use_bertscore=not args.no_bertscore)
    _ = scorer.meteor
    if not args.no_bertscore:
        _ = scorer.bert
    t0 = time.perf_counter()
    ours = scorer.score(hyps, refs, per_item=True)
    secs = time.perf_counter() - t0
    items = ours["per_item"]

    from nltk.translate.meteor_score import meteor_score
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    from rouge_score import rouge_scorer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
    diff: dict[str, float] = {}
    b, b_items = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        diff[f"bleu{k + 1}"] = max(abs(ours[f"bleu{k + 1}"] - b[k]),
                                   float(np.abs(np.array(items[f"bleu{k + 1}"])
                                                - np.array(b_items[k])).max()))
    c, c_items = Cider().compute_score(gts, res)
    diff["cider_d"] = float(np.abs(np.array(items["cider_d"]) - c_items).max())
    r, r_items = Rouge().compute_score(gts, res)
    diff["rouge_l"] = float(np.abs(np.array(items["rouge_l"]) - r_items).max())
    wn = scorer.meteor.wordnet
    m_ref = [meteor_score([x.split() for x in gts[i]], res[i][0].split(), wordnet=wn)
             for i in range(n)]
    diff["meteor"] = float(np.abs(np.array(items["meteor"]) - np.array(m_ref)).max())
    rs = rouge_scorer.RougeScorer(["rouge1", "rouge2"], use_stemmer=False)
    multi = [rs.score_multi(rr, h) for h, rr in zip(hyps, refs)]
    for k in (1, 2):
        diff[f"rouge{k}"] = float(np.abs(np.array(items[f"rouge{k}"]) - np.array(
            [x[f"rouge{k}"].fmeasure for x in multi])).max())
    tokenised = ptb_tokenize(hyps)
    diff["ptb_tokens_mismatch"] = float(sum(a != res[i][0] for i, a in enumerate(tokenised)))
    notes = {}
    if not args.no_bertscore:
        import bert_score

        _, _, F = bert_score.score(hyps, refs, model_type=str(scorer.bert.model_path),
                                   num_layers=6, batch_size=64)
        d = np.abs(np.array(items["bertscore_f1"]) - F.numpy())
        diff["bertscore_f1"] = float(d.max())
        diff["bertscore_f1_mean"] = float(abs(np.mean(items["bertscore_f1"]) - F.numpy().mean()))
        notes["bertscore_f1"] = (f"{int((d > 1e-6).sum())}/{n} items beyond 1e-6: bert_score "
                                 "zero-pads the similarity matrix, so a negative best cosine "
                                 "becomes 0 in padded batches")

    from sklearn.metrics import f1_score, hamming_loss, roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random((n, 5)) < 0.3).astype(int)
    s = np.clip(y * 0.3 + rng.random((n, 5)) * 0.8, 0, 1).round(2)
    cm = classification_metrics(y, s)
    p = (s >= 0.5).astype(int)
    diff["macro_auc"] = abs(cm["macro_auc"] - roc_auc_score(y, s, average="macro"))
    diff["macro_f1"] = abs(cm["macro_f1"] - f1_score(y, p, average="macro", zero_division=0))
    diff["hamming_loss"] = abs(cm["hamming_loss"] - hamming_loss(y, p))
    diff["subset_accuracy"] = abs(cm["subset_accuracy"] - float((p == y).all(axis=1).mean()))
    diff["exact_match"] = _em_diff(rng, n)
    headline = {"benchmark": "metrics", "pairs": n, "seconds": round(secs, 3),
                "pairs_per_s": round(n / secs, 2), "bertscore": not args.no_bertscore,
                "max_abs_diff_vs_reference": diff, "notes": notes,
                "metrics": {k: round(v, 6) for k, v in ours.items() if k != "per_item"}}
    print(json.dumps(headline))
    return 0


def _em_diff(rng: np.random.Generator, n: int) -> float:
    """|ours - recount| of EM overall and per type on random set-valued answers."""
    from ecglm.evaluation.metrics import em_scores, exact_match
    from ecglm.evaluation.qa import Prediction

    opts = ["yes", "no", "none", "lead i", "lead ii"]
    preds = []
    for i in range(n):
        gold = list(rng.choice(opts, int(rng.integers(1, 3)), replace=False))
        parsed = gold[::-1] if rng.random() < 0.5 else list(rng.choice(opts, 1))
        preds.append(Prediction(i, f"t{i % 3}", "a", "q", gold, "", parsed,
                                exact_match(parsed, gold)))
    m = em_scores(preds)
    d = 0.0
    for t in ("t0", "t1", "t2"):
        ok = [set(p.parsed) == set(p.gold) for p in preds if p.question_type == t]
        d = max(d, abs(m[f"em/{t}"] - sum(ok) / len(ok)))
    return d


if __name__ == "__main__":
    raise SystemExit(main())
