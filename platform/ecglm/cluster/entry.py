"""What a submitted job runs (``jobs/<command>.py`` calls :func:`run`).

The job's command line is ``jobs/<command>.py CONFIG [options] [key=value ...]`` in Ray's copy
of the repo. ``CONFIG`` is a path in that copy, or :data:`~ecglm.cluster.runtime.CONFIG_FROM_ENV`
when ``ecglm submit`` sent the YAML in the job's env (a config file outside the repo): it is
written to a temporary file for the run. The first line names the ``ecglm`` code the job runs
(the uploaded copy, unless the cluster's ``PYTHONPATH`` says otherwise).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import ecglm
from ecglm.cli import main
from ecglm.cluster.runtime import CONFIG_ENV, CONFIG_FROM_ENV, CONFIG_NAME_ENV


def run(command: Sequence[str], args: Sequence[str]) -> int:
    """Run ``ecglm <command> <args>``, reading a config sent in the env when ``args[0]`` is
    :data:`CONFIG_FROM_ENV`.

    Raises:
        SystemExit: status 2 when the config is to come from the env and the env lacks it.
    """
    print(f"[ecglm] code: {Path(ecglm.__file__).parent} ({sys.executable})", flush=True)
    if not args or args[0] != CONFIG_FROM_ENV:
        return main([*command, *args])
    text = os.environ.get(CONFIG_ENV)
    if text is None:
        print(f"error: {CONFIG_FROM_ENV} given but {CONFIG_ENV} is not in the job's env",
              file=sys.stderr)
        return 2
    name = Path(os.environ.get(CONFIG_NAME_ENV) or "config.yaml").name
    with tempfile.TemporaryDirectory(prefix="ecglm-config-") as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        return main([*command, str(path), *args[1:]])
