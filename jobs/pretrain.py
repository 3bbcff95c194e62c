"""Ray job entry point: `ray job submit --working-dir . -- python jobs/pretrain.py CONFIG [key=value ...]`.

Thin wrapper over `ecglm pretrain` (contrastive ECG <-> text pretraining of the encoder); on a
cluster `RAY_ADDRESS` makes it join instead of starting Ray.
"""

import sys

from ecglm.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
