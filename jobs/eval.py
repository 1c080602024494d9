"""Ray job entry point: `ray job submit -- python jobs/eval.py --config jobs/configs/eval-cluster.yaml`."""

import sys

from selfdebug.cli import main  # the error convention of every command (selfdebug/errors.py)

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
