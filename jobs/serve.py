"""Ray job entry point of `ecglm serve`: `python jobs/serve.py CONFIG --checkpoint REF [key=value ...]`.

`ecglm submit serve CONFIG --checkpoint REF ...` runs it in Ray's copy of the repo (see
ecglm.cluster); the job runs until it is stopped (`ecglm jobs stop ID`).
"""

import sys

from ecglm.cluster.entry import run

if __name__ == "__main__":
    sys.exit(run(["serve"], sys.argv[1:]))
