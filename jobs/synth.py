"""Ray job entry point: `ray job submit -- python jobs/synth.py --config jobs/configs/synth-cpu.yaml`."""

import sys

from selfdebug.synth.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
