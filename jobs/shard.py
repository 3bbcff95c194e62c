"""Ray job entry point of `ecglm data shard`: `python jobs/shard.py CONFIG [key=value ...]`.

`ecglm submit shard CONFIG ...` runs it in Ray's copy of the repo (ecglm.cli.run_job).
"""

import sys

from ecglm.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job(["data", "shard"], sys.argv[1:]))
