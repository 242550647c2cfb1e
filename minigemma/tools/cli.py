"""Command line: `minigemma <command>` or `python -m minigemma <command>`.

    minigemma generate [--model DIR] [--backend numpy] --prompt TEXT [--max-new-tokens N]
                       [--temperature T --top-k K --top-p P --min-p P --repetition-penalty R
                        --seed S --stop TEXT] [--chat] [--no-stream]
    minigemma convert SRC DST [--dtype f32|bf16|q8_0|q4_0] [--force]
    minigemma info DIR
    minigemma backends
"""
import argparse
import importlib
import json
import sys

OPTIONAL_COMMANDS = ("minigemma.training.distill", "minigemma.tools.bench")


def _generate(args):
    import minigemma
    model = minigemma.load(args.model, backend=args.backend)
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
    if args.chat:
        pieces = model.chat([{"role": "user", "content": args.prompt}],
                            max_new_tokens=args.max_new_tokens, stream=True, stop=args.stop,
                            **sampling)
    else:
        pieces = model.stream(args.prompt, max_new_tokens=args.max_new_tokens, stop=args.stop,
                              **sampling)
    if args.no_stream:
        sys.stdout.write("".join(pieces))
    else:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    print(model.last_stats.summary(), file=sys.stderr)
    return 0


def _convert(args):
    from minigemma.formats.convert import convert
    dst = convert(args.src, args.dst, dtype=args.dtype, overwrite=args.force)
    print(f"wrote {dst}")
    return 0


def _info(args):
    import os

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


def build_parser():
    parser = argparse.ArgumentParser(prog="minigemma", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="continue a prompt (default model: embedded Gemma 3 270M)")
    p.add_argument("--model", default=None, help="converted model folder (default: embedded)")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in Gemma's turn format")
    p.add_argument("--no-stream", action="store_true", help="print the text only when done")
    p.set_defaults(run=_generate)
    p = sub.add_parser("convert", help="convert an HF folder into minigemma's format")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "q8_0", "q4_0"],
                   help="storage of the matrices (norms stay f32; GGUF sources keep their blocks)")
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
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"minigemma: error: {e}", file=sys.stderr)
        return 2
