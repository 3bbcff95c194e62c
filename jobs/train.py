"""Ray job entry point of `ecglm train`: `python jobs/train.py CONFIG [options] [key=value ...]`.

`ecglm submit train CONFIG ...` runs it in Ray's copy of the repo (ecglm.cli.run_job); it also
works with `ray job submit --working-dir . -- python jobs/train.py ...` (then every written path
must be absolute). On a cluster `RAY_ADDRESS` (set by Ray for a job) makes it join.
"""

import sys

from ecglm.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job(["train"], sys.argv[1:]))
