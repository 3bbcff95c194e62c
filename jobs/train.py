"""Ray job entry point of `ecglm train`: `python jobs/train.py CONFIG [options] [key=value ...]`.

`ecglm submit train CONFIG ...` runs it in Ray's copy of the repo (see ecglm.cluster); it also
works with `ray job submit --working-dir . -- python jobs/train.py ...` (then every written path
must be absolute). On a cluster `RAY_ADDRESS` (set by Ray for a job) makes it join.
"""

import sys

from ecglm.cluster.entry import run

if __name__ == "__main__":
    sys.exit(run(["train"], sys.argv[1:]))
