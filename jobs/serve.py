"""Ray job entry point of `ecglm serve`: `python jobs/serve.py CONFIG --checkpoint REF [k=v ...]`.

`ecglm submit serve CONFIG --checkpoint REF ...` runs it in Ray's copy of the repo
(ecglm.cli.run_job); the job runs until it is stopped (`ecglm jobs stop ID`).
"""

import sys

from ecglm.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job(["serve"], sys.argv[1:]))
