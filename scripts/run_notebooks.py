"""Execute the notebooks in place, so their stored outputs come from the committed code.

    python scripts/run_notebooks.py                 # every notebook under notebooks/
    python scripts/run_notebooks.py notebooks/03_sliding_windows.ipynb

Each executed notebook records, in its metadata, a fingerprint of what produced its outputs: its
own code cells and every source file of the package. tests/test_notebooks.py recomputes the
fingerprint and fails when a notebook's outputs are older than the code they show, so a change
to the package is followed by `python scripts/run_notebooks.py` before it is committed.
"""
import hashlib
import os
import sys
import time

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
FINGERPRINT_KEY = "minigemma_fingerprint"


def package_sources():
    """Paths of the package's source files (Python and CUDA C), sorted."""
    paths = []
    for folder, dirs, files in os.walk(os.path.join(ROOT, "minigemma")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        paths += [os.path.join(folder, f) for f in sorted(files)
                  if f.endswith((".py", ".cu", ".cuh", ".h"))]
    return paths


def fingerprint(notebook):
    """sha256 over the notebook's code cells and the package's sources."""
    h = hashlib.sha256()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode())
    for path in package_sources():
        h.update(os.path.relpath(path, ROOT).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def run(path, timeout=600):
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": NOTEBOOKS}}).execute()
    nb.metadata[FINGERPRINT_KEY] = fingerprint(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(paths):
    paths = paths or sorted(os.path.join(NOTEBOOKS, f) for f in os.listdir(NOTEBOOKS)
                            if f.endswith(".ipynb"))
    total = 0.0
    for path in paths:
        seconds = run(path)
        total += seconds
        print(f"{os.path.basename(path):40s} {seconds:6.1f} s", flush=True)
    print(f"{'total':40s} {total:6.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
