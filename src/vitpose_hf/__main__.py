"""`python -m vitpose_hf ...` is `vitpose-hf ...`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
