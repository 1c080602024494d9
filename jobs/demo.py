"""Ray job entry point for the CPU-scale reproduction (`selfdebug demo`):

    ray job submit --working-dir . --runtime-env jobs/runtime-env-cpu.yaml -- \
        python jobs/demo.py --config jobs/configs/demo-cpu.yaml \
        out_dir=/abs/runs/demo-cpu base.cache_dir=/abs/cache/demo-base

Both paths absolute: the job runs in Ray's unpacked copy of the working dir, which Ray
deletes (the report would go with it, and every job would pretrain its base again).
"""

import sys

from selfdebug.cli import main  # the error convention of every command (selfdebug/errors.py)

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
