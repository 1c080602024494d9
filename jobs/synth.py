"""Ray job entry point: `ray job submit -- python jobs/synth.py --config jobs/configs/synth-cpu.yaml`."""

import sys

from selfdebug.cli import main  # the error convention of every command (selfdebug/errors.py)

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
