"""Ray job entry point: `ray job submit --working-dir . -- python jobs/tune.py CONFIG [key=value ...]`.

Thin wrapper over `ecglm tune`; on a cluster `RAY_ADDRESS` makes it join instead of starting Ray.
"""

import sys

from ecglm.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
