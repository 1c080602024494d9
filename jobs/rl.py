"""Ray job entry point: `ray job submit -- python jobs/rl.py --config jobs/configs/rl-cpu.yaml`."""

import sys

from selfdebug.rl.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
