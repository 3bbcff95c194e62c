"""Ray job entry point: `ray job submit --working-dir . -- python jobs/demo.py CONFIG [key=value ...]`.

Thin wrapper over `ecglm demo`; on a cluster `RAY_ADDRESS` makes it join instead of starting Ray.
"""

import sys

from ecglm.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
