"""Our text metrics against their reference implementations (pycocoevalcap, nltk, rouge-score,
bert_score) on ECG-report-like pairs: agreement within 1e-6 (BERTScore: see its test)."""

from __future__ import annotations

import numpy as np
import pytest

from ecglm.evaluation import nlg
from ecglm.evaluation.resources import ptb_tokenize
from tests.helpers import make_pairs

TOL = 1e-6


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(120, seed=1, max_refs=3)


@pytest.fixture(scope="module")
def coco(pairs, java):
    """(our tokenised hyps, refs) and coco-caption's tokenised dicts for the same pairs."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    hyps, refs = pairs
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
    flat = ptb_tokenize(hyps + [r for rs in refs for r in rs])
    th, pos, tr = flat[: len(hyps)], len(hyps), []
    for rs in refs:
        tr.append(flat[pos:pos + len(rs)])
        pos += len(rs)
    return th, tr, gts, res


def test_ptb_tokenisation_equals_coco(coco) -> None:
    th, tr, gts, res = coco
    assert th == [res[i][0] for i in range(len(th))]
    assert tr == [gts[i] for i in range(len(tr))]
    assert ptb_tokenize(["", "  ", "Sinus rhythm."]) == ["", "", "sinus rhythm"]


def test_bleu_matches_pycocoevalcap(coco) -> None:
    from pycocoevalcap.bleu.bleu import Bleu

    th, tr, gts, res = coco
    ref, ref_items = Bleu(4).compute_score(gts, res, verbose=0)
    ours, items = nlg.bleu(th, tr, 4)
    assert np.allclose(ours, ref, atol=TOL, rtol=0)
    assert np.allclose(items, np.array(ref_items).T, atol=TOL, rtol=0)


def test_cider_d_matches_pycocoevalcap(coco) -> None:
    from pycocoevalcap.cider.cider import Cider

    th, tr, gts, res = coco
    ref, ref_items = Cider().compute_score(gts, res)
    ours, items = nlg.cider_d(th, tr)
    assert abs(ours - ref) < TOL and np.abs(items - ref_items).max() < TOL
    assert ours > 0
    assert nlg.cider_d(["sinus rhythm"], [["sinus rhythm"]])[0] == 0.0  # idf of one item


def test_rouge_l_matches_pycocoevalcap(coco) -> None:
    from pycocoevalcap.rouge.rouge import Rouge

    th, tr, gts, res = coco
    ref, ref_items = Rouge().compute_score(gts, res)
    ours, items = nlg.rouge_l(th, tr)
    assert abs(ours - ref) < TOL and np.abs(items - ref_items).max() < TOL


def test_meteor_matches_nltk(coco, wordnet) -> None:
    from nltk.translate.meteor_score import meteor_score

    th, tr, _, _ = coco
    ours, items = nlg.Meteor(wordnet).score(th, tr)
    ref = [meteor_score([r.split() for r in rs], h.split(), wordnet=wordnet)
           for h, rs in zip(th, tr)]
    assert np.abs(items - np.array(ref)).max() < TOL
    # a synonym-only match exercises the WordNet stage
    m = nlg.Meteor(wordnet)
    assert m.single(["heart", "attack"], ["heart", "onslaught"]) == pytest.approx(
        meteor_score([["heart", "onslaught"]], ["heart", "attack"], wordnet=wordnet), abs=TOL)
    assert m.single(["heart", "attack"], ["heart", "onslaught"]) > m.single(["heart", "x"],
                                                                            ["heart", "onslaught"])


@pytest.mark.parametrize("n", [1, 2])
def test_rouge_n_matches_rouge_score(pairs, n: int) -> None:
    from rouge_score import rouge_scorer

    hyps, refs = pairs
    sc = rouge_scorer.RougeScorer([f"rouge{n}"], use_stemmer=False)
    ref = np.array([[getattr(sc.score_multi(rs, h)[f"rouge{n}"], a)
                     for a in ("precision", "recall", "fmeasure")] for h, rs in zip(hyps, refs)])
    _, items = nlg.rouge_n(hyps, refs, n)
    assert np.abs(items - ref).max() < TOL


def test_bertscore_matches_bert_score(bert_scorer) -> None:
    """Tolerance 1e-6 per item, except where some token's best cosine is negative: bert_score
    computes the max over a zero-padded similarity matrix, so in a padded batch a negative best
    cosine becomes 0 (a batch-composition artefact we do not reproduce)."""
    import bert_score

    hyps, refs = make_pairs(60, seed=2, max_refs=2)
    _, ours = bert_scorer.score(hyps, refs)
    P, R, F = bert_score.score(hyps, refs, model_type=str(bert_scorer.model_path),
                               num_layers=6, batch_size=64)
    ref = np.stack([P.numpy(), R.numpy(), F.numpy()], axis=1)
    emb = bert_scorer.embed(hyps + [r for rs in refs for r in rs])
    clean = [i for i, (h, rs) in enumerate(zip(hyps, refs))
             if all((emb[h][0] @ emb[r][0].T).max(axis=1).min() >= 0
                    and (emb[h][0] @ emb[r][0].T).max(axis=0).min() >= 0 for r in rs)]
    assert len(clean) >= 0.9 * len(hyps)
    assert np.abs(ours[clean] - ref[clean]).max() < TOL
    assert np.abs(ours.mean(0) - ref.mean(0)).max() < 1e-4
