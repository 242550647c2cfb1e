"""Command line: `minigemma <command>` or `python -m minigemma <command>`.

    minigemma convert SRC DST [--dtype f32|bf16] [--force]
    minigemma info DIR
    minigemma backends
"""
import argparse
import json
import sys


def _convert(args):
    from .checkpoints.convert import convert
    dst = convert(args.src, args.dst, dtype=args.dtype, overwrite=args.force)
    print(f"wrote {dst}")
    return 0


def _info(args):
    from .checkpoints.format import WEIGHTS_FILE, read_meta
    from .checkpoints.safetensors_io import SafetensorsFile
    import os
    meta = read_meta(args.dir)
    weights = SafetensorsFile(os.path.join(args.dir, WEIGHTS_FILE))
    print(json.dumps({k: v for k, v in meta.items() if k != "quantized"}, indent=2))
    print(f"tensors: {len(weights.names())}, quantized: {len(meta.get('quantized', {}))}, "
          f"file: {os.path.getsize(os.path.join(args.dir, WEIGHTS_FILE)) / 1e6:.1f} MB")
    return 0


def _backends(args):
    from .backends import available_backends
    for name, reason in available_backends().items():
        print(f"{name:6s} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="minigemma", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="convert an HF folder into minigemma's format")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--force", action="store_true", help="replace an existing non-empty DST")
    p.set_defaults(run=_convert)
    p = sub.add_parser("info", help="describe a converted checkpoint folder")
    p.add_argument("dir")
    p.set_defaults(run=_info)
    p = sub.add_parser("backends", help="list the backends and whether they work here")
    p.set_defaults(run=_backends)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"minigemma: error: {e}", file=sys.stderr)
        return 2
