"""Ray job entry point of `ecglm data shard`: `python jobs/shard.py CONFIG [key=value ...]`.

`ecglm submit shard CONFIG ...` runs it in Ray's copy of the repo (see ecglm.cluster).
"""

import sys

from ecglm.cluster.entry import run

if __name__ == "__main__":
    sys.exit(run(["data", "shard"], sys.argv[1:]))
