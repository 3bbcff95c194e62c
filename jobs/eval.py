"""Ray job entry point: `ray job submit --working-dir . -- python jobs/eval.py CONFIG [key=value ...]`.

Thin wrapper over `ecglm eval`; on a cluster `RAY_ADDRESS` makes it join instead of starting Ray.
"""

import sys

from ecglm.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
