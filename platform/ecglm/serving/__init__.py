"""Ray Serve endpoint: HTTP ingress -> ECG encoder -> FAISS retriever -> LoRA LLM.

* :func:`ecglm.serving.launch.start` / :func:`ecglm.serving.launch.stop`: deploy from Python.
* :func:`ecglm.serving.app.build_app`: the ``serve run`` application builder.
* :mod:`ecglm.serving.ingress`: the FastAPI ingress (routes, uploads, streaming, auth).
* :mod:`ecglm.serving.deployments`: the encoder, retriever and LLM deployments.
* :mod:`ecglm.serving.parts`: what each replica computes, without Ray.
* :mod:`ecglm.serving.catalog`: the main model and the LoRA adapters of ``serve.adapters``.
* :mod:`ecglm.serving.validation`, :mod:`ecglm.serving.inputs`, :mod:`ecglm.serving.auth`:
  request checks, upload formats and bearer tokens (pure functions, no Ray).

Submodules are imported on use so that ``import ecglm.serving`` does not load Ray Serve.
"""
