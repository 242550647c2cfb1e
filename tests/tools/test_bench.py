"""`minigemma bench`'s own logic, without timing anything: llama.cpp's output is parsed, its
runner is found, and the table has the columns, the ratios and the header the issue asks for."""
import argparse
import os

import pytest

from minigemma.tools import bench

LLAMA_OUTPUT = """
llama_perf_sampler_print:    sampling time =      10.92 ms /   634 runs   (    0.02 ms per token)
llama_perf_context_print:        load time =    2163.85 ms
llama_perf_context_print: prompt eval time =    1501.05 ms /   506 tokens (    2.97 ms per token,   337.10 tokens per second)
llama_perf_context_print:        eval time =    2577.84 ms /   127 runs   (   20.30 ms per token,    49.27 tokens per second)
llama_perf_context_print:       total time =    4114.25 ms /   633 tokens
"""


def test_llama_cpp_timing_lines_are_parsed():
    got = bench.parse_llama_cpp(LLAMA_OUTPUT)
    assert got["prompt_tokens"] == 506 and got["decode_tokens"] == 127
    assert got["prefill"] == pytest.approx(506 / 1.50105)
    assert got["decode"] == pytest.approx(127 / 2.57784)
    with pytest.raises(ValueError, match="no timing lines"):
        bench.parse_llama_cpp("error: unable to load model\n")


def test_the_runner_is_found_by_path_then_on_path_then_in_its_build_folder(tmp_path, monkeypatch):
    assert bench.find_llama_cpp("some/where/llama-simple").endswith("some/where/llama-simple")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("LLAMA_CPP_HOME", str(tmp_path / "home"))
    assert bench.find_llama_cpp() is None
    built = tmp_path / "home" / "build" / "bin" / bench.LLAMA_CPP_NAME
    built.parent.mkdir(parents=True)
    built.write_text("#!/bin/sh\n")
    built.chmod(0o755)
    assert bench.find_llama_cpp() == str(built)
    on_path = tmp_path / "bin" / bench.LLAMA_CPP_NAME
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path.parent) + os.pathsep + str(tmp_path / "empty"))
    assert bench.find_llama_cpp() == str(on_path)


def test_the_table_sets_every_engine_beside_llama_cpp():
    args = argparse.Namespace(preset=None, quantize=None, model=None)
    rows = [("llama.cpp", {"decode": 80.0, "prefill": 700.0, "peak_rss_mb": 340.0,
                           "prompt_tokens": 501}),
            ("minigemma numba", {"decode": 72.0, "prefill": 770.0, "peak_rss_mb": 425.0,
                                 "prompt_tokens": 501, "ttft": 1.1, "ttft_cold": 7.0}),
            ("minigemma numpy", {"error": "boom"})]
    text = bench.report(rows, args, 2, "0.1 0.1 0.1", "0.2 0.2 0.2", date="2026-12-01 10:00")
    lines = text.splitlines()
    assert "date: 2026-12-01 10:00" in lines and any(l.startswith("machine: ") for l in lines)
    header = next(l for l in lines if l.startswith("| engine | decode"))
    assert "decode tok/s (128 tokens)" in header and "prefill tok/s (501-token prompt)" in header
    assert "peak RSS MB" in header and "decode / llama.cpp" in header
    numba_row = next(l for l in lines if l.startswith("| minigemma numba | 72.0"))
    assert "| 0.90× | 1.10× | 1.25× |" in numba_row
    assert any(l.startswith("| minigemma numpy | failed: boom") for l in lines)
    assert "| minigemma numba | 7.00 | 1.10 |" in lines  # the TTFT table
