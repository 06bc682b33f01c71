"""`python -m inference_pod [OPTIONS]`: process one shard — the command every shard pod runs."""

import sys

from inference_pod.shard.entry import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
