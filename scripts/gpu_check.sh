#!/usr/bin/env bash
# gpu_check.sh — finish the CuPy backend's verification on a fresh machine with an NVIDIA GPU.
#
# The CPU-only CI compiles every .cu file (nvcc, sm_80 and sm_90, warnings as errors) and runs
# each kernel's CUDA C on CPU threads under AddressSanitizer, UBSan and ThreadSanitizer
# (tests/backends/cuda). What only a GPU can show runs here, in one command, in about five
# minutes, with only what the machine has installed (nothing is pip-installed):
#
#   1. the device, and the cupy backend's probe          no CUDA device: stops with exit code 2
#   2. every CuPy test, with MINIGEMMA_REQUIRE_BACKENDS=cupy (a skip of cupy is a failure):
#        each op against NumPy on drawn shapes (tests/backends/test_backend_equivalence.py);
#        whole-model logits within 1e-3 of NumPy and identical greedy tokens on tiny Gemma 1/2/3
#        and Griffin models (float32 and all five GGML block kinds) and on a random-weight
#        gemma3-270m (tests/backends/cuda/test_cupy_gpu.py); NVRTC compiling every .cu file
#   3. compute-sanitizer --tool memcheck on one small model test (CuPy's memory pool off)
#   4. timings on random-weight gemma3-270m and gemma2-2b: numpy, numba and cupy through
#      `minigemma bench`'s own worker (minigemma.tools.bench: 512-token prefill best of 3, 128
#      greedy decode steps best of 2; 64 and 8 for the CPU backends on gemma2-2b, to fit the
#      time), and HF transformers on CUDA (float32, eager attention) timed by this script with
#      the same protocol, since `minigemma bench` times HF only on the CPU and from a GGUF file
#
# It ends with one table, also written to $OUT/gpu_check_table.md; the whole log goes to
# $OUT/gpu_check.log when OUT is set, else to a temporary folder it names. The timings share
# what is left of GPU_CHECK_BUDGET_S (default 290 s) and are skipped, saying so, when it runs out.
# Exit code: 0 every check passed, 1 a check failed, 2 no CUDA device, 3 CuPy cannot run.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
LOG_DIR="${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/gpu_check.log"
: > "$LOG"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
say() { echo "$*" | tee -a "$LOG"; }

# --- 1. the device and the probe ----------------------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>>"$LOG" | tee -a "$LOG" | grep -q '^GPU '; then
    say "gpu_check: no CUDA device on this machine (nvidia-smi is missing or lists no GPU)."
    say "gpu_check: nothing was run. Without a GPU, the CuPy backend is verified on the CPU by:"
    say "    python -m pytest tests/backends/cuda"
    say "gpu_check: log: $LOG"
    exit 2
fi
REASON="$("$PY" -c 'from minigemma.backends import available_backends as a; print(a()["cupy"] or "")' 2>>"$LOG")"
if [ -n "$REASON" ]; then
    say "gpu_check: the cupy backend cannot run here: $REASON"
    say "gpu_check: log: $LOG"
    case "$REASON" in "no CUDA device"*) exit 2 ;; *) exit 3 ;; esac
fi

# --- 2-4. the checks and the table, in Python -----------------------------------------------------
WORK="$(mktemp -d -t gpu_check_work.XXXXXX)"
cat > "$WORK/gpu_check.py" <<'PYTHON'
"""The checks of scripts/gpu_check.sh after the probe; `--hf-worker SPEC` times HF on CUDA."""
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT, LOG_DIR = os.getcwd(), sys.argv[1] if len(sys.argv) > 1 else "."
LOG = os.path.join(LOG_DIR, "gpu_check.log")
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET_S", "290"))
START = time.monotonic()
THREADS = os.cpu_count()
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")
FULL, SHORT = (512, 128), (64, 8)  # (prompt tokens, decode steps)
# (preset, engine, protocol, timeout cap s): the GPU engines first, the CPU ones as time allows
TIMINGS = [("gemma3-270m", "cupy", FULL, 90), ("gemma3-270m", "HF CUDA eager", FULL, 90),
           ("gemma2-2b", "cupy", FULL, 100), ("gemma2-2b", "HF CUDA eager", FULL, 90),
           ("gemma3-270m", "numba", FULL, 120), ("gemma3-270m", "numpy", FULL, 90),
           ("gemma2-2b", "numba", SHORT, 100), ("gemma2-2b", "numpy", SHORT, 100)]


def left():
    return BUDGET_S - (time.monotonic() - START)


def run(cmd, timeout, env=None):
    """cmd with its output appended to the log -> (exit code or "timeout", seconds, output)."""
    t = time.monotonic()
    with open(LOG, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=max(1.0, timeout), env=env, stdin=subprocess.DEVNULL,
                                  check=False)
            code, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
            code, out = "timeout", out or ""
        log.write(out)
    return code, time.monotonic() - t, out


def pytest_summary(out):
    lines = [l for l in out.strip().splitlines() if re.search(r"\d+ (passed|failed|error)", l)]
    return lines[-1].strip("= ") if lines else "no pytest summary (see the log)"


# --- timings ---------------------------------------------------------------------------------

def hf_worker(spec):
    """HF transformers on CUDA, float32, eager attention, random weights of the preset's shape;
    the protocol of minigemma.tools.bench (TTFT of a 16-token prompt, prefill best of 3 with
    last-position logits only, greedy decode best of 2 after a 1-token prompt)."""
    import torch
    import transformers

    from minigemma.models.config import preset
    c = preset(spec["preset"])
    kinds = {"local": "sliding_attention", "global": "full_attention"}
    fields = dict(vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.ffn_dim,
                  num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                  num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
                  max_position_embeddings=c.max_position, sliding_window=c.sliding_window,
                  query_pre_attn_scalar=int(c.query_pre_attn_scalar),
                  layer_types=[kinds[k] for k in c.layer_types])
    if c.family == "gemma2":
        config = transformers.Gemma2Config(attn_logit_softcapping=c.attn_softcap,
                                           final_logit_softcapping=c.final_softcap, **fields)
        model_class = transformers.Gemma2ForCausalLM
    else:
        config = transformers.Gemma3TextConfig(**fields)
        model_class = transformers.Gemma3ForCausalLM
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = model_class(config).to(torch.float32).eval()
    prompt_tokens, decode_tokens = spec["protocol"]

    def ids(n):
        return torch.randint(3, c.vocab_size, (1, n), device="cuda")

    def sync():
        torch.cuda.synchronize()
    result = {}
    with torch.no_grad():
        start = time.perf_counter()
        model(ids(16), logits_to_keep=1).logits[0, -1].argmax().item()
        result["ttft"] = time.perf_counter() - start
        prompt, times = ids(prompt_tokens), []
        for _ in range(3):
            sync()
            t = time.perf_counter()
            model(prompt, logits_to_keep=1).logits[0, -1].argmax().item()
            times.append(time.perf_counter() - t)
        result["prefill"] = prompt_tokens / min(times)
        times = []
        for _ in range(2):
            out = model(ids(1), use_cache=True)
            sync()
            t = time.perf_counter()
            for _ in range(decode_tokens):
                token = out.logits[0, -1].argmax().view(1, 1)
                out = model(token, past_key_values=out.past_key_values, use_cache=True)
            out.logits[0, -1].argmax().item()
            times.append(time.perf_counter() - t)
        result["decode"] = decode_tokens / min(times)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def time_engine(preset, engine, protocol, timeout, numba_cache):
    env = dict(os.environ, **{v: str(THREADS) for v in THREAD_VARIABLES},
               NUMBA_CACHE_DIR=numba_cache)
    spec = {"preset": preset, "protocol": protocol}
    if engine.startswith("HF"):
        cmd = [sys.executable, os.path.abspath(__file__), "--hf-worker", json.dumps(spec)]
    else:  # minigemma bench's worker, with this run's prompt and decode lengths
        spec.update(engine="minigemma", model=None, quantize=None, threads=THREADS,
                    ttft_only=False, backend=engine)
        code = ("import minigemma.tools.bench as b; "
                f"b.PROMPT_TOKENS, b.DECODE_TOKENS = {protocol[0]}, {protocol[1]}; b.worker()")
        cmd = [sys.executable, "-c", code, json.dumps(spec)]
    status, seconds, out = run(cmd, timeout, env)
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    if status != 0 or not lines:
        tail = " | ".join(out.strip().splitlines()[-2:])[-160:]
        return {"error": f"{'timed out' if status == 'timeout' else 'failed'}: {tail}"}, seconds
    return json.loads(lines[-1][len("RESULT "):]), seconds


# --- the checks --------------------------------------------------------------------------------

def main():
    rows, failed = [], False  # rows: (what, result, prefill, decode, seconds)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True,
                         check=False).stdout.strip()
    rows.append(("device", gpu or "?", "", "", ""))
    import cupy
    versions = f"{cupy.__version__} / {cupy.cuda.runtime.runtimeGetVersion()}"
    rows.append(("CuPy / CUDA runtime", versions, "", "", ""))

    print("gpu_check: 2. the CuPy tests (MINIGEMMA_REQUIRE_BACKENDS=cupy) ...", flush=True)
    env = dict(os.environ, MINIGEMMA_REQUIRE_BACKENDS="cupy", HYPOTHESIS_PROFILE="dev")
    nvrtc_tests = "tests/backends/cuda/test_cupy_compile.py::test_nvrtc_"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
           "tests/backends/test_backend_equivalence.py", "tests/backends/test_contract.py",
           "tests/backends/cuda/test_cupy_gpu.py",
           f"{nvrtc_tests}compiles_the_source_the_backend_loads",
           f"{nvrtc_tests}reports_a_syntax_error_with_file_and_line",
           "-k", "cupy and not real_model"]
    status, seconds, out = run(cmd, min(160.0, left()), env)
    failed |= status != 0
    rows.append(("CuPy tests", pytest_summary(out) if status != "timeout" else "timed out",
                 "", "", f"{seconds:.0f}"))

    print("gpu_check: 3. compute-sanitizer --tool memcheck ...", flush=True)
    sanitizer = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not os.path.exists(sanitizer):
        rows.append(("compute-sanitizer memcheck", "not installed here", "", "", ""))
    else:
        cmd = [sanitizer, "--tool", "memcheck", "--error-exitcode", "97", "--print-limit", "20",
               sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               ("tests/backends/cuda/test_cupy_gpu.py::"
                "test_memcheck_target_tiny_models_without_the_memory_pool")]
        status, seconds, out = run(cmd, min(110.0, max(30.0, left() - 60)), env)
        summary = re.findall(r"ERROR SUMMARY: (\d+) error", out)
        result = (f"{summary[-1]} errors, test {pytest_summary(out)}" if summary
                  else "timed out" if status == "timeout" else f"exit code {status}")
        failed |= status != 0
        rows.append(("compute-sanitizer memcheck (tiny Griffin, tiny Gemma 2 in blocks)",
                     result, "", "", f"{seconds:.0f}"))

    print("gpu_check: 4. timings ...", flush=True)
    numba_cache = os.path.join(tempfile.gettempdir(), "gpu_check_numba_cache")  # shared
    decode = {}
    for preset, engine, protocol, cap in TIMINGS:
        what = f"{preset} {engine}" + ("" if protocol == FULL else
                                       f" ({protocol[0]}-token prefill, {protocol[1]} steps)")
        if left() < 20:
            rows.append((what, "skipped: the time budget is spent", "", "", ""))
            continue
        print(f"gpu_check:    {what} ...", flush=True)
        r, seconds = time_engine(preset, engine, protocol, min(cap, left()), numba_cache)
        if "error" in r:
            failed |= engine == "cupy"
            rows.append((what, r["error"], "", "", f"{seconds:.0f}"))
            continue
        decode[(preset, engine)] = r["decode"]
        note = f"TTFT {r['ttft']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB"
        if "gpu_peak_mb" in r:
            note += f", GPU peak {r['gpu_peak_mb']:.0f} MB"
        rows.append((what, note, f"{r['prefill']:.0f}", f"{r['decode']:.1f}", f"{seconds:.0f}"))
    for preset in ("gemma3-270m", "gemma2-2b"):
        ours, hf = decode.get((preset, "cupy")), decode.get((preset, "HF CUDA eager"))
        if ours and hf:
            rows.append((f"{preset}: cupy decode / HF CUDA decode", f"{ours / hf:.2f}×",
                         "", "", ""))

    table = ["| check | result | prefill tok/s | decode tok/s | seconds |",
             "|---|---|---:|---:|---:|"]
    table += [f"| {what} | {result} | {p} | {d} | {s} |" for what, result, p, d, s in rows]
    table.append(f"| total | {'FAILED' if failed else 'passed'} | | | "
                 f"{time.monotonic() - START:.0f} |")
    text = "\n".join(table)
    print("\n" + text)
    with open(os.path.join(LOG_DIR, "gpu_check_table.md"), "w") as f:
        f.write(text + "\n")
    with open(LOG, "a") as log:
        log.write("\n" + text + "\n")
    print(f"\ngpu_check: log: {LOG}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--hf-worker":
        hf_worker(json.loads(sys.argv[2]))
    else:
        sys.exit(main())
PYTHON
"$PY" "$WORK/gpu_check.py" "$LOG_DIR"
STATUS=$?
rm -rf "$WORK"
exit $STATUS
