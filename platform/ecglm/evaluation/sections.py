"""Optional parts of ``ecglm eval`` beyond ECG-QA exact match, built from a prepared run:

* ``evaluation.report_metrics`` -> ``report_generation``: text metrics of the
  nearest-neighbour retrieved-report baseline on the split's records (reference = each
  record's own report).
* ``evaluation.classification`` -> ``classification``: zero-shot PTB-XL superclass metrics of
  the checkpoint's ECG encoder and of the retrieval (pre-fine-tuning) encoder, plus labels
  extracted from reference and nearest-neighbour reports.
* ``evaluation.transfer: cinc2021`` -> ``transfer/cinc2021``: the same zero-shot classifier
  (prototypes from the train split) on CinC 2021 records (:mod:`ecglm.evaluation.transfer`).

Both read every record of the split (and, for classification, of the train split) into
memory: fine for the laptop-scale shards; stream in batches before using on all of PTB-XL.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ecglm.evaluation.run import EvalSection
from ecglm.models.from_checkpoint import load_model


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def report_generation_section(prep: Any) -> EvalSection:
    """Retrieved-report baseline scored with every text metric (BERTScore included)."""
    from ecglm.evaluation.classify import read_records
    from ecglm.evaluation.metrics import TextScorer
    from ecglm.evaluation.reports import report_section_data

    cfg = prep.cfg
    recs = read_records(prep.shards.records, cfg.evaluation.split)
    scorer = TextScorer(cfg.evaluation.bertscore_model, cfg.evaluation.bertscore_layers)
    systems, body = report_section_data(recs.ecg_ids, recs.reports, prep.retrieval.neighbours,
                                        scorer)
    return EvalSection("report_generation", "Report generation (records of the split)",
                       _flat(systems), systems, body)


def classification_section(prep: Any, checkpoint_dir: Path) -> EvalSection:
    """Zero-shot superclass metrics (AUC/F1/Hamming) and text-label metrics."""
    from ecglm.evaluation.classify import (classification_report, find_statements,
                                           read_records, zero_shot_eval, embed_signals,
                                           superclass_matrix)
    from ecglm.retrieval.build import load_retrieval_encoder

    cfg = prep.cfg
    statements = find_statements([prep.shards.manifest.get("source", ""), cfg.data.shared_root])
    train = read_records(prep.shards.records, "train")
    test = read_records(prep.shards.records, cfg.evaluation.split)
    first = [next(iter(prep.retrieval.neighbours.get(e, [])), "") for e in test.ecg_ids]
    encoder = load_model(cfg, checkpoint_dir).encoder.eval()
    rep = classification_report(encoder, train, test, statements, neighbour_reports=first)
    base = load_retrieval_encoder(prep.retrieval.folder)
    y_tr = superclass_matrix(train.scp_codes, statements)
    y_te = superclass_matrix(test.scp_codes, statements)
    zs = zero_shot_eval(embed_signals(base, train.signals), y_tr,
                        embed_signals(base, test.signals), y_te)
    rep["metrics"].update({f"retrieval_encoder/zero_shot/{k}": v for k, v in zs.items()})
    m = rep["metrics"]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>"
                   for k, v in m.items() if not k.endswith("n_labels_used"))
    prev = ", ".join(f"{c} {p:.2f}" for c, p in rep["prevalence"].items())
    body = (f"<p>Zero-shot: cosine to class prototypes of {rep['n_train']} training records; "
            f"{rep['n_test']} evaluated records. Superclass prevalence: "
            f"{html.escape(prev)}.</p><table><tr><th>metric</th><th>value</th></tr>{rows}"
            "</table>")
    return EvalSection("classification", "PTB-XL superclass classification", _flat(m), rep,
                       body)


def transfer_section(prep: Any, checkpoint_dir: Path) -> EvalSection:
    """Zero-shot transfer of the superclass classifier to ``evaluation.transfer`` records,
    for the checkpoint's encoder and the retrieval encoder."""
    from ecglm.evaluation.classify import (embed_signals, find_statements, read_records,
                                           superclass_matrix)
    from ecglm.evaluation.transfer import load_cinc2021, transfer_eval, transfer_html
    from ecglm.retrieval.build import load_retrieval_encoder

    cfg = prep.cfg
    name = str(cfg.evaluation.transfer)
    root = Path(cfg.evaluation.transfer_root or Path(cfg.data.shared_root) / name)
    target = load_cinc2021(root, cfg.data.fs, int(round(cfg.data.fs * cfg.data.seconds)),
                           cfg.data.normalize)
    statements = find_statements([prep.shards.manifest.get("source", ""), cfg.data.shared_root])
    train = read_records(prep.shards.records, "train")
    y_tr = superclass_matrix(train.scp_codes, statements)
    results: dict[str, dict[str, Any]] = {}
    for enc_name, enc in (("model", load_model(cfg, checkpoint_dir).encoder.eval()),
                          ("retrieval_encoder", load_retrieval_encoder(prep.retrieval.folder))):
        results[enc_name] = transfer_eval(embed_signals(enc, train.signals), y_tr,
                                          embed_signals(enc, target.signals), target)
    metrics = {f"{enc}/{k}": float(v) for enc, r in results.items()
               for k, v in r["metrics"].items()}
    return EvalSection(f"transfer/{name}", f"Zero-shot transfer: {name}", metrics,
                       {"root": str(root), **results}, transfer_html(name, results))


def build_sections(prep: Any, checkpoint_dir: Path) -> list[EvalSection]:
    """The optional sections switched on in ``cfg.evaluation``."""
    cfg = prep.cfg
    out = []
    if cfg.evaluation.report_metrics:
        out.append(report_generation_section(prep))
    if cfg.evaluation.classification:
        out.append(classification_section(prep, checkpoint_dir))
    if cfg.evaluation.transfer:
        out.append(transfer_section(prep, checkpoint_dir))
    return out
