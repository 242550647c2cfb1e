"""Benchmark every backend (and HF transformers) on one model: same code as `minigemma bench`."""
import sys

from minigemma.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
