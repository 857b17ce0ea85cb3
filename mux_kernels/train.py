"""``python -m mux_kernels.train`` (or under ``torchrun``): train one MUX-BERT stage."""

import sys

from .training.commands import main

if __name__ == "__main__":
    sys.exit(main())
