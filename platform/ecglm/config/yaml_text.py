"""YAML as people write configs: ``1e-3`` is a float.

PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-3``), so ``1e-3`` would be the string
``"1e-3"``: fine for a typed field (coerced later), wrong inside free-form values such as
``tune.search_space`` (``{loguniform: [1e-5, 1e-3]}``). :func:`load_yaml` is ``safe_load`` with
one more implicit float pattern; it is used for config files and CLI override values.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _ConfigLoader(yaml.SafeLoader):
    """``SafeLoader`` + exponent floats without a dot (a subclass: ``SafeLoader`` is unchanged)."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse ``text`` like ``yaml.safe_load``, reading ``1e-3`` / ``-2E5`` as floats."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
