"""Contrastive ECG <-> text pretraining of the ECG encoder (``ecglm pretrain``).

* :mod:`ecglm.pretrain.data`: the text paired with each record, superclass labels, counts;
* :mod:`ecglm.pretrain.text`: text backbones (MiniLM sentence encoder, LLM input embeddings);
* :mod:`ecglm.pretrain.model`: ECG tower (encoder + projection, lead masking), text tower,
  learned logit scale/bias;
* :mod:`ecglm.pretrain.loss`: SigLIP's pairwise sigmoid loss, gathered across workers;
* :mod:`ecglm.pretrain.zeroshot`: zero-shot superclass scores and AUCs from label prompts;
* :mod:`ecglm.pretrain.loop`: the Ray Train worker loop (on :mod:`ecglm.train.worker`);
* :mod:`ecglm.pretrain.run`: the driver (shards, the Ray Train runner of
  :mod:`ecglm.train.runner`, the tracked MLflow run, encoder export, eval);
* :mod:`ecglm.pretrain.plot`: the result figure.
"""
