"""``python -m pillow_gcp``: the ``gcp`` command line (see :mod:`pillow_gcp.cli`)."""

import sys

from pillow_gcp.cli import run

if __name__ == "__main__":
    sys.exit(run())
