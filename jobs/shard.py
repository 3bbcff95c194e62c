"""Ray job entry point: `ray job submit --working-dir . -- python jobs/shard.py CONFIG [key=value ...]`."""

import sys

from ecglm.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "shard", *sys.argv[1:]]))
