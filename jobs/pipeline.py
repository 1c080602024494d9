"""Ray job entry point for the whole method (synth → sft → rl → eval → report):

    ray job submit --working-dir . --runtime-env jobs/runtime-env-cpu.yaml -- \
        python jobs/pipeline.py --config jobs/configs/pipeline-cpu.yaml run_dir=/abs/path

Submitting the same command again resumes (complete stages are skipped).
"""

import sys

from selfdebug.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
