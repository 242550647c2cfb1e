"""The fuzz campaign (tests/helpers/fuzz_campaign.py): a fixed-seed subset in CI, and the judge
itself (each kind of unclean outcome is caught). The full run: `python scripts/fuzz.py`."""
import sys
import textwrap

import numpy as np
import pytest

from helpers import fuzz_campaign as fc

CI_SEED, CI_CASES = 12, 1000


@pytest.mark.slow
def test_a_fixed_seed_subset_is_all_clean():
    outcomes = fc.run_campaign(CI_SEED, list(range(CI_CASES)), jobs=2)
    counts = fc.summary(outcomes)
    print(counts)
    assert counts["cases"] == CI_CASES
    assert set(counts["by_kind"]) == set(fc.KINDS)  # every kind of input was drawn
    failed = [o for o in outcomes if o.failed]
    assert not failed, "\n".join(f"case {o.index} [{o.kind}] {o.mutation}: {o.status}: "
                                 f"{o.detail}" for o in failed[:20])
    assert counts["by_status"].get("clean", 0) > CI_CASES // 2  # most inputs are refused


def test_cases_are_reproducible_from_the_seed():
    a, b = fc.Case(3, 17), fc.Case(3, 17)
    assert a.kind == b.kind and a.rng.random() == b.rng.random()
    kinds = {fc.Case(0, i).kind for i in range(300)}
    assert kinds == set(fc.KINDS)


@pytest.mark.parametrize("raise_, status", [
    (KeyError("x"), "bad-type"), (IndexError("x"), "bad-type"), (MemoryError(), "memory"),
    (ValueError("something went wrong"), "unnamed"),
    (ValueError("/data/model.gguf: tensor 'w' is bad"), "clean"),
    (FileNotFoundError("/data/model.gguf: no such file"), "unnamed"),
    (FileNotFoundError("/data/model.gguf: tensor 'w': no such file"), "clean")])
def test_the_judge_sorts_errors(monkeypatch, tmp_path, raise_, status):
    def builder(case, templates, workdir):
        case.files, case.names = ["/data/model.gguf"], ["tensor"]

        def check():
            raise raise_
        return check
    monkeypatch.setattr(fc, "BUILDERS", {kind: builder for kind in fc.KINDS})
    assert fc.run_case(0, 0, None, str(tmp_path)).status == status


@pytest.mark.parametrize("result, must_fail, status", [
    (True, False, "ok"), (True, True, "accepted"),
    (fc.finite(np.array([1.0, np.nan])), False, "non-finite")])
def test_the_judge_sorts_successes(monkeypatch, tmp_path, result, must_fail, status):
    def builder(case, templates, workdir):
        case.must_fail = must_fail
        return lambda: result
    monkeypatch.setattr(fc, "BUILDERS", {kind: builder for kind in fc.KINDS})
    assert fc.run_case(0, 0, None, str(tmp_path)).status == status


FAKE_WORKER = textwrap.dedent("""
    import json, os, sys, time
    seed, indices = int(sys.argv[1]), [int(i) for i in sys.argv[2].split(",")]
    print("READY", flush=True)
    for i in indices:
        print(f"START {i}", flush=True)
        if i == 1:
            time.sleep(60)  # a hang
        if i == 3:
            os._exit(139)  # a crash
        print("RESULT " + json.dumps(dict(index=i, kind="api", mutation="", status="clean")),
              flush=True)
""")


def test_the_runner_isolates_hangs_and_crashes(monkeypatch):
    import subprocess
    monkeypatch.setattr(fc, "_start_worker", lambda seed, indices: subprocess.Popen(
        [sys.executable, "-c", FAKE_WORKER, str(seed), ",".join(map(str, indices))],
        stdout=subprocess.PIPE, start_new_session=True))
    outcomes = {o.index: o.status for o in fc.run_batch(0, [0, 1, 2, 3, 4], case_seconds=3)}
    assert outcomes == {0: "clean", 1: "hang", 2: "clean", 3: "crash", 4: "clean"}


def test_the_worker_runs_under_a_memory_limit():
    import subprocess
    code = ("import sys; sys.path.insert(0, 'tests'); from helpers.fuzz_campaign import "
            "_limit_memory, MEMORY_LIMIT; _limit_memory(); import resource; "
            "print(resource.getrlimit(resource.RLIMIT_AS)[0] == MEMORY_LIMIT); "
            "x = bytearray(2 * MEMORY_LIMIT)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "True" and "MemoryError" in done.stderr
