"""`python -m inference_pod [OPTIONS]`: process one shard — the command every shard pod runs."""

import sys

from .cli import main

if __name__ == "__main__":
    main(["shard", *sys.argv[1:]])
