"""Ray Serve endpoint: HTTP ingress -> ECG encoder -> FAISS retriever -> LoRA LLM.

* :func:`ecglm.serving.launch.start` / :func:`ecglm.serving.launch.stop`: deploy from Python.
* :func:`ecglm.serving.app.build_app`: the ``serve run`` application builder.
* :mod:`ecglm.serving.validation`: request checks (pure functions, no Ray).

Submodules are imported on use so that ``import ecglm.serving`` does not load Ray Serve.
"""
