"""`python -m ocrjob_cli`: the same as the `ocrjob` console script."""

import sys

from ocrjob_cli.app import main

if __name__ == "__main__":
    main(sys.argv[1:])
