"""Ray job entry point of `ecglm tune`: `python jobs/tune.py CONFIG [options] [key=value ...]`.

`ecglm submit tune CONFIG ...` runs it in Ray's copy of the repo (see ecglm.cluster); it also
works with `ray job submit --working-dir . -- python jobs/tune.py ...` (then every written path
must be absolute). On a cluster `RAY_ADDRESS` (set by Ray for a job) makes it join.
"""

import sys

from ecglm.cluster.entry import run

if __name__ == "__main__":
    sys.exit(run(["tune"], sys.argv[1:]))
