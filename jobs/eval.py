"""Ray job entry point of `ecglm eval`: `python jobs/eval.py CONFIG [options] [key=value ...]`.

`ecglm submit eval CONFIG ...` runs it in Ray's copy of the repo (ecglm.cli.run_job); it also
works with `ray job submit --working-dir . -- python jobs/eval.py ...` (then every written path
must be absolute). On a cluster `RAY_ADDRESS` (set by Ray for a job) makes it join.
"""

import sys

from ecglm.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job(["eval"], sys.argv[1:]))
