"""Ray job entry point: deploy (or update in place) the service on the cluster and exit.

    ray job submit --working-dir . -- python jobs/serve.py --config jobs/configs/serve-cluster.yaml --detach [model.path=/ckpt]

Without --detach the job keeps running and stops the application when it ends.
"""

import sys

from selfdebug.serve.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
