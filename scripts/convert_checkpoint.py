"""Convert a checkpoint into minigemma's format (same code as `minigemma convert`)."""
import sys

from minigemma.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
