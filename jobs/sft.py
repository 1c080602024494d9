"""Ray job entry point: `ray job submit -- python jobs/sft.py --config jobs/configs/sft-cpu.yaml`."""

import sys

from selfdebug.train.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
