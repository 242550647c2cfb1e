"""A conversion killed with SIGKILL at any point leaves either no destination or a whole one,
never deletes a good folder before its replacement is whole, and the next conversion in the same
folder removes what the killed one left (docs/formats.md#native).

Each case runs `minigemma.convert` in a subprocess that stops at a named point (printing it and
sleeping), and SIGKILLs it there: while the tensors are written, with the weights written but
no config.json, with the old folder renamed aside, with the new one renamed in but the old one
not yet deleted; and at fixed delays into a slowed conversion. Fresh and --force conversions.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minigemma
from minigemma.formats.native import PARTIAL_PREFIX, is_complete

from helpers.tiny_artefacts import tiny_config, write_tiny_hf

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent("""
    import os, shutil, sys, time
    import minigemma.formats.native as native
    src, dst, force, point, delay = sys.argv[1:6]
    real_replace, real_rmtree, real_write = os.replace, shutil.rmtree, native.write_safetensors

    def stop(name):
        if name == point:
            print("AT", name, flush=True)
            time.sleep(60)

    def replace(a, b):
        real_replace(a, b)
        stop("aside" if b.endswith(native.REPLACED_SUFFIX) else "swapped")

    def write(path, tensors, metadata=None):
        def slowed(name, produce, i):
            def run():
                if i == 3:
                    stop("tensors")
                time.sleep(float(delay))
                return produce()
            return run
        real_write(path, [(n, s, d, slowed(n, p, i)) for i, (n, s, d, p) in enumerate(tensors)],
                   metadata)
        stop("weights")
    os.replace, native.write_safetensors = replace, write
    print("START", flush=True)
    import minigemma
    minigemma.convert(src, dst, progress=False, overwrite=force == "1")
    print("DONE", flush=True)
""")


def start(src, dst, force, point="", delay=0.0):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(dst), str(int(force)),
                             point, str(delay)], stdout=subprocess.PIPE, text=True)


def kill_at(src, dst, force, point):
    child = start(src, dst, force, point)
    for line in child.stdout:
        if line.startswith("AT") or line.startswith("DONE"):
            break
    assert line.strip() == f"AT {point}", f"the child never reached {point}: {line!r}"
    child.send_signal(signal.SIGKILL)
    child.wait()


def kill_after(src, dst, force, seconds):
    child = start(src, dst, force, delay=0.05)
    assert child.stdout.readline().startswith("START")
    try:
        child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait()


def leftovers(parent):
    return [n for n in os.listdir(parent) if n.startswith(PARTIAL_PREFIX) or
            n.endswith(".scratch")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two HF folders of one config with different weights: the old and the new model."""
    root = tmp_path_factory.mktemp("sources")
    config = tiny_config(num_layers=4, layer_types=("local", "global") * 2)
    old, new = (write_tiny_hf(root / name, seed=seed, config=config)
                for name, seed in (("old", 0), ("new", 1)))
    ids = [2, 290, 291, 292]
    logits = {name: minigemma.load(minigemma.convert(src, root / f"{name}-converted",
                                                     progress=False)).logits(ids)
              for name, src in (("old", old), ("new", new))}
    return old, new, ids, logits


def which(folder, ids, logits):
    """"old" or "new": the model a whole destination holds (it must load with its tokenizer)."""
    assert is_complete(folder), f"{folder} looks complete but is not"
    model = minigemma.load(folder)
    assert model.tokenizer is not None
    got = model.logits(ids)
    return next(name for name, want in logits.items() if np.array_equal(got, want))


POINTS = ["tensors", "weights", "aside", "swapped"]


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("force", [False, True], ids=["fresh", "force"])
def test_a_conversion_killed_at_a_point(sources, tmp_path, point, force):
    old, new, ids, logits = sources
    dst = tmp_path / "model"
    if force:
        minigemma.convert(old, dst, progress=False)
    if point == "aside" and not force:
        pytest.skip("a fresh conversion has no folder to set aside")
    kill_at(new, dst, force, point)
    if force:  # the old folder is whole, or the new one; "aside": neither is at dst yet
        if point == "aside":
            assert not dst.exists()
        else:
            assert which(dst, ids, logits) == ("new" if point == "swapped" else "old")
    elif dst.exists():
        assert point == "swapped" and which(dst, ids, logits) == "new"
    assert leftovers(tmp_path) or point == "swapped"
    # the next conversion into the same folder cleans up, and puts a set-aside folder back
    other = minigemma.convert(new, tmp_path / "other", progress=False)
    assert leftovers(tmp_path) == []
    if force:
        assert which(dst, ids, logits) == ("new" if point == "swapped" else "old")
    assert which(other, ids, logits) == "new"


@pytest.mark.parametrize("seconds", [0.3, 0.8, 1.5, 2.5, 4.0])
@pytest.mark.parametrize("force", [False, True], ids=["fresh", "force"])
def test_a_conversion_killed_at_any_time(sources, tmp_path, seconds, force):
    old, new, ids, logits = sources
    dst = tmp_path / "model"
    if force:
        minigemma.convert(old, dst, progress=False)
    kill_after(new, dst, force, seconds)
    minigemma.convert(old, tmp_path / "next", progress=False)  # cleans up after the kill
    assert leftovers(tmp_path) == []
    if dst.exists():
        assert which(dst, ids, logits) in (("old", "new") if force else ("new",))
    else:
        assert not force, "the old folder was lost"


def test_a_live_conversion_is_not_cleaned_up_by_another(sources, tmp_path):
    old, new, ids, logits = sources
    child = start(new, tmp_path / "slow", False, "weights")
    assert child.stdout.readline().startswith("START")
    assert child.stdout.readline().strip() == "AT weights"
    try:
        minigemma.convert(old, tmp_path / "fast", progress=False)
        partial = leftovers(tmp_path)
        assert partial, "the running conversion's folder was removed"
        lock = next(n for n in partial if n.endswith(".lock"))
        assert json.loads((tmp_path / lock).read_text())["destination"] == str(tmp_path / "slow")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
