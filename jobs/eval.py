"""Ray job entry point: `ray job submit -- python jobs/eval.py --config jobs/configs/eval-cluster.yaml`."""

import sys

from selfdebug.evaluate.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
