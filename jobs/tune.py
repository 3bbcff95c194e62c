"""Ray job entry point of `ecglm tune`: `python jobs/tune.py CONFIG [options] [key=value ...]`.

`ecglm submit tune CONFIG ...` runs it in Ray's copy of the repo (ecglm.cli.run_job); it also
works with `ray job submit --working-dir . -- python jobs/tune.py ...` (then every written path
must be absolute). On a cluster `RAY_ADDRESS` (set by Ray for a job) makes it join.
"""

import sys

from ecglm.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job(["tune"], sys.argv[1:]))
