"""Offline resources for text metrics: coco-caption's PTB tokenizer (Java) and WordNet for METEOR.

* :func:`ptb_tokenize` is a thin wrapper over the Stanford CoreNLP 3.4.1 ``PTBTokenizer`` jar
  shipped inside the ``pycocoevalcap`` wheel, called exactly as coco-caption calls it
  (``-preserveLines -lowerCase``, then coco's punctuation tokens dropped). The papers' BLEU,
  ROUGE-L and CIDEr-D are defined on *this* tokenisation, so the jar is the reference and we do
  not re-implement it. Needs ``java`` (17 works) on ``PATH``.
* :func:`wordnet_dir` builds an nltk data folder (``<root>/corpora/wordnet``) from the Debian
  packages ``wordnet-base`` + ``wordnet-sense-index`` (``/usr/share/wordnet``), adding the
  ``lexnames`` file those packages lack. Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence

#: tokens coco-caption removes after PTB tokenisation
COCO_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                              ".", "?", "!", ",", ":", "-", "--", "...", ";"])

#: WordNet 3.0 lexicographer files: number, name, syntactic category (see ``lexnames(5WN)``)
_LEXNAMES = ["adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1",
             "noun.animal 1", "noun.artifact 1", "noun.attribute 1", "noun.body 1",
             "noun.cognition 1", "noun.communication 1", "noun.event 1", "noun.feeling 1",
             "noun.food 1", "noun.group 1", "noun.location 1", "noun.motive 1", "noun.object 1",
             "noun.person 1", "noun.phenomenon 1", "noun.plant 1", "noun.possession 1",
             "noun.process 1", "noun.quantity 1", "noun.relation 1", "noun.shape 1",
             "noun.state 1", "noun.substance 1", "noun.time 1", "verb.body 2", "verb.change 2",
             "verb.cognition 2", "verb.communication 2", "verb.competition 2",
             "verb.consumption 2", "verb.contact 2", "verb.creation 2", "verb.emotion 2",
             "verb.motion 2", "verb.perception 2", "verb.possession 2", "verb.social 2",
             "verb.stative 2", "verb.weather 2", "adj.ppl 3"]

_WORDNET_FILES = ["adj.exc", "adv.exc", "verb.exc", "noun.exc", "cntlist.rev", "data.adj",
                  "data.adv", "data.noun", "data.verb", "index.adj", "index.adv", "index.noun",
                  "index.verb", "index.sense"]

DEBIAN_WORDNET = Path("/usr/share/wordnet")


class MetricResourceError(RuntimeError):
    """A resource a metric needs (Java, the tokenizer jar, WordNet) is missing."""


def default_cache_root() -> Path:
    """``$ECGLM_CACHE`` or ``<cwd>/.cache`` (the repo's cache folder when run from the root)."""
    return Path(os.environ.get("ECGLM_CACHE", ".cache")).resolve()


def ptb_jar() -> Path:
    """Path of coco-caption's Stanford CoreNLP 3.4.1 jar (inside the pycocoevalcap wheel)."""
    try:  # deferred on purpose: the caller may run without coco-caption installed
        import pycocoevalcap.tokenizer as tok
    except ImportError as err:  # pragma: no cover
        raise MetricResourceError("pycocoevalcap is not installed (pip install pycocoevalcap)"
                                  ) from err
    jar = Path(list(tok.__path__)[0]) / "stanford-corenlp-3.4.1.jar"  # namespace package
    if not jar.exists():  # pragma: no cover
        raise MetricResourceError(f"{jar} is missing")
    return jar


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """coco-caption tokenisation of every text, in one Java call.

    Args:
        texts: N raw strings (newlines are replaced by spaces, as coco-caption does).

    Returns:
        N strings of lower-cased tokens joined by single spaces, punctuation removed; a blank
        input gives ``""``.
    """
    if shutil.which("java") is None:
        raise MetricResourceError("java not found on PATH (coco-caption tokenisation needs it)")
    clean = [t.replace("\n", " ").replace("\r", " ").strip() for t in texts]
    keep = [i for i, t in enumerate(clean) if t]
    out = [""] * len(clean)
    if not keep:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "sentences.txt"
        src.write_text("\n".join(clean[i] for i in keep), encoding="utf-8")
        proc = subprocess.run(
            ["java", "-cp", str(ptb_jar()), "edu.stanford.nlp.process.PTBTokenizer",
             "-preserveLines", "-lowerCase", str(src)],
            capture_output=True, check=False)
    if proc.returncode != 0:
        raise MetricResourceError(f"PTBTokenizer failed: {proc.stderr.decode()[-500:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    for i, line in zip(keep, lines):
        out[i] = " ".join(w for w in line.rstrip().split(" ") if w not in COCO_PUNCTUATION)
    return out


def wordnet_dir(root: Optional[Path] = None, source: Path = DEBIAN_WORDNET) -> Path:
    """nltk data folder holding ``corpora/wordnet`` built from Debian's WordNet 3.0 files.

    Args:
        root: nltk data root to fill (default ``<cache>/nltk_data``); reused when complete.
        source: folder with the Debian ``wordnet-base``/``wordnet-sense-index`` files.

    Returns:
        ``root``; pass it to ``nltk.corpus.reader.WordNetCorpusReader(root/'corpora/wordnet')``
        or append it to ``nltk.data.path``.
    """
    root = Path(root) if root is not None else default_cache_root() / "nltk_data"
    dst = root / "corpora" / "wordnet"
    if (dst / "lexnames").exists() and all((dst / f).exists() for f in _WORDNET_FILES):
        return root
    missing = [f for f in _WORDNET_FILES if not (source / f).exists()]
    if missing:
        raise MetricResourceError(
            f"WordNet files {missing} not in {source}: apt-get install -y wordnet-base "
            "wordnet-sense-index")
    tmp = dst.with_name(f"wordnet.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in _WORDNET_FILES:
        shutil.copyfile(source / f, tmp / f)
    (tmp / "lexnames").write_text(
        "".join(f"{i:02d}\t{e.split()[0]}\t{e.split()[1]}\n" for i, e in enumerate(_LEXNAMES)))
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return root


def load_wordnet(root: Optional[Path] = None):  # -> nltk WordNetCorpusReader
    """A WordNet reader over :func:`wordnet_dir` (no nltk downloader involved).

    nltk only reads corpora under a root listed in ``nltk.data.path``, so the folder is
    appended there once (nltk's own search list; idempotent).
    """
    # deferred on purpose: nltk's corpus readers load only when METEOR needs WordNet
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    data_root = wordnet_dir(root)
    if str(data_root) not in nltk.data.path:
        nltk.data.path.append(str(data_root))
    with warnings.catch_warnings():  # "multilingual functions are not available": expected
        warnings.simplefilter("ignore", UserWarning)
        return WordNetCorpusReader(str(data_root / "corpora" / "wordnet"), None)
