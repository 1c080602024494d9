"""Ray job entry point: `ray job submit -- python jobs/sft.py --config jobs/configs/sft-cpu.yaml`."""

import sys

from selfdebug.cli import main  # the error convention of every command (selfdebug/errors.py)

if __name__ == "__main__":
    sys.exit(main(["sft", *sys.argv[1:]]))
