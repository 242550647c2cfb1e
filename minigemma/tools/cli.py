"""Command line: `minigemma <command>` or `python -m minigemma <command>`.

    minigemma generate [--model DIR] [--backend auto|numpy|numba|cupy] --prompt TEXT
                       [--max-new-tokens N] [--temperature T --top-k K --top-p P --min-p P
                        --repetition-penalty R --seed S --stop TEXT] [--chat] [--no-stream]
    minigemma generate ... --prompt-file FILE | --prompt -      (the prompt from a file, stdin)
                       [--speculative]                         (prompt-lookup drafts, exact)
    minigemma chat [--model M] [--system TEXT] [sampling]      interactive multi-turn REPL
    minigemma perplexity FILE [--model M] [--context N] [--stride S]     (FILE may be -)
    minigemma serve [--model M] [--host 127.0.0.1] [--port 8000] [--speculative]
    minigemma export DIR --to hf OUT
    minigemma convert SRC DST [--dtype f32|bf16|q8_0|q4_0] [--force]
    minigemma info DIR
    minigemma backends

--model takes a converted folder, a GGUF file or an HF folder (converted once into the cache).
"""
import argparse
import importlib
import json
import os
import sys

OPTIONAL_COMMANDS = ("minigemma.training.distill", "minigemma.training.commands",
                     "minigemma.tools.bench")


def _read_text(path):
    """The text of a file, or of stdin for "-"; ValueError naming it unless it is UTF-8."""
    if path == "-":
        data, name = sys.stdin.buffer.read(), "stdin"
    else:
        from minigemma.formats.files import read_bytes
        data, name = read_bytes(path, "text file"), path
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: not UTF-8 text (byte {e.start}: "
                         f"{data[e.start:e.start + 1]!r})") from None


def _sampling(args):
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed)


def _generate(args):
    import minigemma
    if (args.prompt is None) == (args.prompt_file is None):
        raise ValueError("give the prompt with --prompt TEXT or --prompt-file FILE "
                         "(\"-\" reads stdin), one of them")
    prompt = _read_text(args.prompt_file or "-") if args.prompt in (None, "-") else args.prompt
    model = minigemma.load(args.model, backend=args.backend)
    sampling = _sampling(args)
    if args.chat:
        pieces = model.chat([{"role": "user", "content": prompt}],
                            max_new_tokens=args.max_new_tokens, stream=True, stop=args.stop,
                            speculative=args.speculative, **sampling)
    else:
        pieces = model.stream(prompt, max_new_tokens=args.max_new_tokens, stop=args.stop,
                              speculative=args.speculative, **sampling)
    if args.no_stream:
        sys.stdout.write("".join(pieces))
    else:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    print(model.last_stats.summary(), file=sys.stderr)
    return 0


def _chat(args, read_line=input, out=sys.stdout):
    """An interactive conversation: each line you type is a user turn; the reply streams.
    /reset starts over; /exit, an empty line at the start or end of input leaves."""
    import minigemma
    model = minigemma.load(args.model, backend=args.backend)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = []
    print("minigemma chat: /reset starts over, /exit leaves", file=sys.stderr)
    while True:
        try:
            line = read_line("> ")
        except EOFError:
            break
        if line.strip() in ("/exit", "/quit"):
            break
        if line.strip() == "/reset":
            history = []
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        reply = ""
        for piece in model.chat(system + history, max_new_tokens=args.max_new_tokens,
                                stream=True, **_sampling(args)):
            reply += piece
            out.write(piece)
            out.flush()
        out.write("\n")
        history.append({"role": "assistant", "content": reply})
        print(model.last_stats.summary(), file=sys.stderr)
    return 0


def _perplexity(args):
    import minigemma
    from minigemma.text.scoring import perplexity
    model = minigemma.load(args.model, backend=args.backend)
    ids = model._require_tokenizer().encode(_read_text(args.file))
    result = perplexity(model, ids, context=args.context, stride=args.stride)
    print(result.summary())
    return 0


def _serve(args):
    import minigemma
    from minigemma.tools.server import serve
    model = minigemma.load(args.model, backend=args.backend)
    serve(model, host=args.host, port=args.port, model_id=args.name,
          speculative=args.speculative)
    return 0


def _export(args):
    from minigemma.formats.export_hf import export_hf
    print(f"wrote {export_hf(args.dir, args.out, overwrite=args.force)}")
    return 0


def _convert(args):
    from minigemma.formats.convert import convert
    dst = convert(args.src, args.dst, dtype=args.dtype, overwrite=args.force)
    print(f"wrote {dst}")
    return 0


def _info(args):
    from minigemma.formats.native import WEIGHTS_FILE, read_meta
    from minigemma.formats.safetensors import SafetensorsFile
    meta = read_meta(args.dir)
    weights = SafetensorsFile(os.path.join(args.dir, WEIGHTS_FILE))
    print(json.dumps({k: v for k, v in meta.items() if k != "quantized"}, indent=2))
    print(f"tensors: {len(weights.names())}, quantized: {len(meta.get('quantized', {}))}, "
          f"file: {os.path.getsize(os.path.join(args.dir, WEIGHTS_FILE)) / 1e6:.1f} MB")
    return 0


def _backends(args):
    from minigemma.backends import available_backends
    for name, reason in available_backends().items():
        print(f"{name:6s} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def _model_arguments(p):
    p.add_argument("--model", default=None, help="converted folder, GGUF file or HF folder "
                                                  "(default: the embedded model)")
    p.add_argument("--backend", default="auto",
                   help="auto (default: CuPy, else Numba, else NumPy), numpy, numba or cupy")


def _sampling_arguments(p):
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


def build_parser():
    parser = argparse.ArgumentParser(prog="minigemma", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="continue a prompt (default model: embedded Gemma 3 270M)")
    _model_arguments(p)
    p.add_argument("--prompt", default=None, help='the prompt ("-": read it from stdin)')
    p.add_argument("--prompt-file", default=None, help='read the prompt from a file ("-": stdin)')
    p.add_argument("--speculative", action="store_true",
                   help="speculative decoding by prompt lookup (same output, faster on "
                        "repetitive text)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    _sampling_arguments(p)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in Gemma's turn format")
    p.add_argument("--no-stream", action="store_true", help="print the text only when done")
    p.set_defaults(run=_generate)
    p = sub.add_parser("chat", help="an interactive multi-turn conversation")
    _model_arguments(p)
    p.add_argument("--system", default=None, help="a system message for the conversation")
    p.add_argument("--max-new-tokens", type=int, default=256)
    _sampling_arguments(p)
    p.set_defaults(run=_chat)
    p = sub.add_parser("perplexity", help="perplexity of a text file over a sliding window")
    p.add_argument("file", help='a UTF-8 text file ("-": stdin)')
    _model_arguments(p)
    p.add_argument("--context", type=int, default=None, help="window length (default 512)")
    p.add_argument("--stride", type=int, default=None, help="window step (default context/2)")
    p.set_defaults(run=_perplexity)
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (/v1/...)")
    _model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                                                       "localhost only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default="minigemma", help="the model id clients ask for")
    p.add_argument("--speculative", action="store_true", help="speculative decoding")
    p.set_defaults(run=_serve)
    p = sub.add_parser("export", help="write a converted model as an HF transformers folder")
    p.add_argument("dir", help="a converted minigemma folder")
    p.add_argument("--to", choices=["hf"], required=True)
    p.add_argument("out")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty OUT")
    p.set_defaults(run=_export)
    p = sub.add_parser("convert", help="convert an HF folder into minigemma's format")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--dtype", default=None, choices=["f32", "bf16", "q8_0", "q4_0"],
                   help="storage of the matrices of an HF or .pt source (default f32; norms "
                        "stay f32); a GGUF file keeps its blocks and takes no --dtype")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty DST")
    p.set_defaults(run=_convert)
    p = sub.add_parser("info", help="describe a converted checkpoint folder")
    p.add_argument("dir")
    p.set_defaults(run=_info)
    p = sub.add_parser("backends", help="list the backends and whether they work here")
    p.set_defaults(run=_backends)
    for module in OPTIONAL_COMMANDS:  # commands that live beside the code they run
        try:
            importlib.import_module(module).register_cli(sub)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # `minigemma generate ... | head`: the reader has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush does not fail again
        return 1
    except KeyboardInterrupt:
        print("minigemma: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as e:  # OSError: missing, exists, permissions…
        print(f"minigemma: error: {e}", file=sys.stderr)
        return 2
