"""N-gram text metrics on tokenised text: BLEU-1..4, CIDEr-D, ROUGE-L (coco-caption
definitions), METEOR (Lavie & Agarwal 2007, WordNet synonyms), ROUGE-1/2 (Lin 2004, F-measure).

Inputs are N hypotheses (one string each) and N reference lists (one or more strings each).
BLEU, CIDEr-D, ROUGE-L and METEOR expect text already tokenised by
:func:`ecglm.evaluation.resources.ptb_tokenize` (space-joined tokens); ROUGE-1/2 tokenise raw
text themselves (lower-case, non-alphanumerics to spaces), as Google's ``rouge-score`` does.

Conventions kept from the reference code so that scores agree to 1e-6:

* BLEU: corpus score from summed clipped n-gram counts, brevity penalty with the *closest*
  reference length; smoothing constants 1e-15 (numerator) and 1e-9 (denominator).
* CIDEr-D: document frequencies over the evaluated references, ``log(N_items)`` as reference
  length, clipped tf-idf, Gaussian length penalty (sigma 6) where "length" is the number of
  bigrams (coco-caption's quirk), mean over n=1..4 and references, times 10. With one item all
  idf weights are 0, so CIDEr-D is 0.
* ROUGE-L: LCS precision/recall maxima over references, F with beta 1.2; tokens are
  ``text.split(" ")`` as in coco-caption.
* METEOR: exact, then Porter-stem, then WordNet-synonym matching, greedy from the last
  hypothesis word; alpha 0.9, beta 3, gamma 0.5; best reference. This is nltk's METEOR, not the
  Java METEOR 1.5 jar (which adds paraphrase tables); scores differ from coco's METEOR.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
from nltk.stem.porter import PorterStemmer

Tokens = list[str]


def ngram_counts(tokens: Sequence[str], n_max: int) -> Counter:
    """Counts of all 1..n_max-grams (tuples) of ``tokens``."""
    out: Counter = Counter()
    for k in range(1, n_max + 1):
        out.update(tuple(tokens[i:i + k]) for i in range(len(tokens) - k + 1))
    return out


def _check(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"metrics: {len(hyps)} hypotheses but {len(refs)} reference lists")
    if any(len(r) == 0 for r in refs):
        raise ValueError("metrics: every hypothesis needs at least one reference")


def bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4
         ) -> tuple[list[float], np.ndarray]:
    """BLEU-1..n (coco-caption).

    Returns:
        (corpus scores [BLEU-1, ..., BLEU-n], per-item scores of shape (N, n))
    """
    _check(hyps, refs)
    tiny, small = 1e-15, 1e-9
    guess_tot, correct_tot = np.zeros(n), np.zeros(n)
    test_tot = ref_tot = 0
    per_item = np.zeros((len(hyps), n))
    for idx, (hyp, rs) in enumerate(zip(hyps, refs)):
        h = hyp.split()
        hc = ngram_counts(h, n)
        ref_max: dict[tuple, int] = {}
        ref_lens = []
        for r in rs:
            rt = r.split()
            ref_lens.append(len(rt))
            for g, c in ngram_counts(rt, n).items():
                if c > ref_max.get(g, 0):
                    ref_max[g] = c
        t = len(h)
        reflen = min((abs(rl - t), rl) for rl in ref_lens)[1]
        guess = np.array([max(0, t - k) for k in range(n)], dtype=float)
        correct = np.zeros(n)
        for g, c in hc.items():
            correct[len(g) - 1] += min(ref_max.get(g, 0), c)
        guess_tot += guess
        correct_tot += correct
        test_tot += t
        ref_tot += reflen
        per_item[idx] = _bleu_from_counts(correct, guess, t, reflen, tiny, small)
    corpus = _bleu_from_counts(correct_tot, guess_tot, test_tot, ref_tot, tiny, small)
    return [float(x) for x in corpus], per_item


def _bleu_from_counts(correct: np.ndarray, guess: np.ndarray, testlen: float, reflen: float,
                      tiny: float, small: float) -> np.ndarray:
    out = np.zeros(len(correct))
    prod = 1.0
    for k in range(len(correct)):
        prod *= (float(correct[k]) + tiny) / (float(guess[k]) + small)
        out[k] = prod ** (1.0 / (k + 1))
    ratio = (testlen + tiny) / (reflen + small)
    if ratio < 1:
        out *= math.exp(1 - 1 / ratio)
    return out


def cider_d(hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4,
            sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """CIDEr-D (coco-caption). Returns (mean, per-item scores of shape (N,))."""
    _check(hyps, refs)
    ref_counts = [[ngram_counts(r.split(), n) for r in rs] for rs in refs]
    hyp_counts = [ngram_counts(h.split(), n) for h in hyps]
    df: Counter = Counter()
    for rcs in ref_counts:
        df.update({g for rc in rcs for g in rc})
    log_n = math.log(float(len(hyps)))

    def vec(counts: Counter) -> tuple[list[dict], np.ndarray, int]:
        v: list[dict] = [dict() for _ in range(n)]
        norm = np.zeros(n)
        n_bigrams = 0
        for g, tf in counts.items():
            k = len(g) - 1
            w = float(tf) * (log_n - math.log(max(1.0, float(df.get(g, 0)))))
            v[k][g] = w
            norm[k] += w * w
            if k == 1:
                n_bigrams += tf
        return v, np.sqrt(norm), n_bigrams

    scores = np.zeros(len(hyps))
    for i, (hc, rcs) in enumerate(zip(hyp_counts, ref_counts)):
        vh, nh, lh = vec(hc)
        total = np.zeros(n)
        for rc in rcs:
            vr, nr, lr = vec(rc)
            penalty = math.exp(-(float(lh - lr) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0)
                          for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * penalty
        scores[i] = float(np.mean(total)) / len(rcs) * 10.0
    return float(np.mean(scores)), scores


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(hyps: Sequence[str], refs: Sequence[Sequence[str]], beta: float = 1.2
            ) -> tuple[float, np.ndarray]:
    """ROUGE-L (coco-caption). Returns (mean, per-item scores of shape (N,))."""
    _check(hyps, refs)
    scores = np.zeros(len(hyps))
    for i, (hyp, rs) in enumerate(zip(hyps, refs)):
        h = hyp.split(" ")
        pairs = [(lcs_length(r.split(" "), h), len(r.split(" "))) for r in rs]
        p = max(lcs / len(h) for lcs, _ in pairs)
        r = max(lcs / rl for lcs, rl in pairs)
        if p != 0 and r != 0:
            scores[i] = (1 + beta ** 2) * p * r / (r + beta ** 2 * p)
    return float(np.mean(scores)), scores


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> Tokens:
    """``rouge-score`` tokenisation without stemming: lower-case, non-alphanumerics -> space."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def rouge_n(hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int
            ) -> tuple[dict[str, float], np.ndarray]:
    """ROUGE-n precision/recall/F1 on raw text (best reference by F1, as ``score_multi``).

    Returns:
        ({"precision", "recall", "f1"} means, per-item array of shape (N, 3) with P, R, F1)
    """
    _check(hyps, refs)
    per = np.zeros((len(hyps), 3))
    for i, (hyp, rs) in enumerate(zip(hyps, refs)):
        ht = rouge_tokens(hyp)
        hc = Counter(tuple(ht[j:j + n]) for j in range(len(ht) - n + 1))
        best = (0.0, 0.0, 0.0)
        for k, r in enumerate(rs):
            rt = rouge_tokens(r)
            rc = Counter(tuple(rt[j:j + n]) for j in range(len(rt) - n + 1))
            overlap = sum(min(c, rc[g]) for g, c in hc.items() if g in rc)
            p = overlap / max(sum(hc.values()), 1)
            rec = overlap / max(sum(rc.values()), 1)
            f = 2 * p * rec / (p + rec) if p + rec > 0 else 0.0
            if k == 0 or f > best[2]:
                best = (p, rec, f)
        per[i] = best
    mean = per.mean(axis=0) if len(per) else np.zeros(3)
    return {"precision": float(mean[0]), "recall": float(mean[1]), "f1": float(mean[2])}, per


class Meteor:
    """METEOR with exact / Porter-stem / WordNet-synonym matching (nltk's definition).

    Args:
        wordnet: an nltk ``WordNetCorpusReader`` (see :func:`resources.load_wordnet`).
        alpha, beta, gamma: the F-mean weight and fragmentation-penalty parameters.
    """

    def __init__(self, wordnet: Any, alpha: float = 0.9, beta: float = 3.0,
                 gamma: float = 0.5) -> None:
        self.wordnet = wordnet
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self._stem: Callable[[str], str] = PorterStemmer().stem
        self._syn_cache: dict[str, frozenset[str]] = {}
        self._stem_cache: dict[str, str] = {}

    def _synonyms(self, word: str) -> frozenset[str]:
        if word not in self._syn_cache:
            names = {lemma.name() for s in self.wordnet.synsets(word) for lemma in s.lemmas()}
            self._syn_cache[word] = frozenset(x for x in names if "_" not in x) | {word}
        return self._syn_cache[word]

    def _stemmed(self, word: str) -> str:
        if word not in self._stem_cache:
            self._stem_cache[word] = self._stem(word)
        return self._stem_cache[word]

    @staticmethod
    def _greedy(hyp: list[tuple[int, str]], ref: list[tuple[int, str]],
                candidates: Callable[[str], frozenset[str]] | None
                ) -> tuple[list[tuple[int, int]], list[tuple[int, str]], list[tuple[int, str]]]:
        """Match from the last hypothesis word backwards to the last free reference position
        of an equal word (or, with ``candidates``, of any synonym: the right-most one)."""
        where: dict[str, list[int]] = {}
        for j, (_, w) in enumerate(ref):
            where.setdefault(w, []).append(j)
        used_h, used_r, pairs = set(), set(), []
        for i in range(len(hyp) - 1, -1, -1):
            word = hyp[i][1]
            if candidates is None:
                pos = where.get(word)
                if not pos:
                    continue
                j = pos.pop()
            else:
                best_j, best_w = -1, None
                for syn in candidates(word):
                    pos = where.get(syn)
                    if pos and pos[-1] > best_j:
                        best_j, best_w = pos[-1], syn
                if best_w is None:
                    continue
                j = where[best_w].pop()
            used_h.add(i)
            used_r.add(j)
            pairs.append((hyp[i][0], ref[j][0]))
        return (pairs, [x for i, x in enumerate(hyp) if i not in used_h],
                [x for j, x in enumerate(ref) if j not in used_r])

    def single(self, hyp: Sequence[str], ref: Sequence[str]) -> float:
        """METEOR of one tokenised hypothesis against one tokenised reference."""
        h = [(i, w.lower()) for i, w in enumerate(hyp)]
        r = [(j, w.lower()) for j, w in enumerate(ref)]
        if not h or not r:
            return 0.0
        exact, h1, r1 = self._greedy(h, r, None)
        stem, h2, r2 = self._greedy([(i, self._stemmed(w)) for i, w in h1],
                                    [(j, self._stemmed(w)) for j, w in r1], None)
        # as in nltk, the synonym stage sees the *stemmed* words left over
        syn, _, _ = self._greedy(h2, r2, self._synonyms)
        matches = sorted(exact + stem + syn, key=lambda m: m[0])
        m = len(matches)
        if m == 0:
            return 0.0
        precision, recall = m / len(h), m / len(r)
        fmean = precision * recall / (self.alpha * precision + (1 - self.alpha) * recall)
        chunks = 1 + sum(1 for a, b in zip(matches, matches[1:])
                         if not (b[0] == a[0] + 1 and b[1] == a[1] + 1))
        return (1 - self.gamma * (chunks / m) ** self.beta) * fmean

    def score(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]
              ) -> tuple[float, np.ndarray]:
        """Mean METEOR over items (best reference each) and per-item scores of shape (N,)."""
        _check(hyps, refs)
        per = np.array([max(self.single(h.split(), r.split()) for r in rs)
                        for h, rs in zip(hyps, refs)], dtype=float)
        return (float(per.mean()) if len(per) else 0.0), per
