"""``serve run serve.app:build_app config=... checkpoint=...`` (or ``serve run
serve/serve_config.yaml``) from the repository root; the application lives in
:mod:`ecglm.serving.app`."""

from ecglm.serving.app import build_app

__all__ = ["build_app"]
