"""A GGUF file's vocabulary -> a serialized SentencePiece model (docs/formats.md#gguf).

A GGUF stores the vocabulary as metadata (llama.cpp's keys); `tokenizer.ggml.model == "llama"`
means SentencePiece. We turn it back into a SentencePiece `ModelProto`, built with `protobuf` and
SentencePiece's own schema (`sentencepiece.sentencepiece_model_pb2`);
`minigemma.text.tokenizer.Tokenizer.from_gguf` loads the result.

* `pieces` (one per id, in id order) from `tokenizer.ggml.tokens` / `.scores` / `.token_type`,
  which must be lists of the same length (strings, finite numbers, token types 0–6).
  GGUF token types use SentencePiece's own numbering and map one to one:
  1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE (`<0x00>`..`<0xFF>`);
  llama.cpp's 0 (undefined) becomes NORMAL. Two fixes:
  - the unknown piece becomes UNKNOWN (Gemma's GGUF marks `<unk>` CONTROL, but SentencePiece
    needs exactly one UNKNOWN piece). It is the piece at `tokenizer.ggml.unknown_token_id`, or,
    when the file has no such key (llama.cpp's converter writes none for a folder with only a
    tokenizer.model), the one piece whose token type is UNKNOWN;
  - in USER_DEFINED pieces a plain space is written back as "▁" (U+2581). llama.cpp's converter
    stores Gemma's space runs as real spaces (`"  "`, id 138...), but SentencePiece escapes spaces
    to "▁" before it looks for user-defined pieces, so `"  "` would never match.
* `trainer_spec`: model_type BPE, vocab_size, byte_fallback (when byte pieces exist), and the
  unk/bos/eos/pad ids and piece strings (from `tokenizer.ggml.*_token_id`; absent bos / eos /
  pad ids are Gemma's 2 / 1 / 0, the config defaults, not SentencePiece's or Llama's). Every id
  must lie in the vocabulary.
* `normalizer_spec`: the identity normalizer, add_dummy_prefix = `tokenizer.ggml.add_space_prefix`
  (False for Gemma), remove_extra_whitespaces False, escape_whitespaces True (" " -> "▁").

Errors name the key (the caller adds the file).

SentencePiece then behaves like the original model: user-defined pieces (newline/space/tab runs,
HTML-like tags, `<start_of_image>`) are matched whole and never merged, everything else is BPE by
piece score (Gemma's scores fall with the id, so this is also the merge order HF uses), characters
outside the vocabulary fall back to byte pieces, and CONTROL pieces are never produced from text.
"""
import math

from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from minigemma.formats.gguf.reader import gguf_value
from minigemma.models.config import GemmaConfig, field_defaults

# SentencePiece piece types (ModelProto.SentencePiece.Type). GGUF's token_type uses the same numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # "▁": how SentencePiece writes a space inside a piece
KEYS = "tokenizer.ggml."
GEMMA_IDS = {name: field_defaults(GemmaConfig)[f"{name}_id"] for name in ("bos", "eos", "pad")}


def proto_from_gguf(reader):
    """Serialized SentencePiece ModelProto (bytes) for the tokenizer stored in an open GGUF
    (see the module docstring); ValueError naming the key for metadata that does not fit."""
    model = gguf_value(reader, KEYS + "model", None)
    tokens = gguf_value(reader, KEYS + "tokens", None)
    if model is None or tokens is None:
        raise ValueError("GGUF file has no tokenizer (no tokenizer.ggml.model / tokenizer.ggml.tokens)")
    if model != "llama":
        raise ValueError(f"GGUF tokenizer model {model!r} is not SentencePiece ('llama'); not supported")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{KEYS}tokens must be a non-empty list of strings")
    n = len(tokens)
    scores = _per_token(reader, "scores", [0.0] * n, n)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
               for x in scores):
        raise ValueError(f"{KEYS}scores must hold finite numbers")
    types = _per_token(reader, "token_type", [NORMAL] * n, n)
    if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= BYTE for t in types):
        raise ValueError(f"{KEYS}token_type must hold token types 0 to {BYTE}")
    # llama.cpp's type 0 (undefined) has no SentencePiece equivalent: call it NORMAL.
    types = [t or NORMAL for t in types]
    unk_id = _special_id(reader, "unknown_token_id", None, n)
    typed_unknown = [i for i, t in enumerate(types) if t == UNKNOWN]
    if unk_id is None:
        if len(typed_unknown) != 1:
            raise ValueError(f"{KEYS}unknown_token_id is absent and {len(typed_unknown)} pieces "
                             f"have the token type UNKNOWN: which one is the unknown piece?")
        unk_id = typed_unknown[0]
    elif set(typed_unknown) - {unk_id}:
        raise ValueError(f"{KEYS}unknown_token_id is {unk_id} but pieces "
                         f"{sorted(set(typed_unknown) - {unk_id})[:5]} also have the token "
                         f"type UNKNOWN")
    types[unk_id] = UNKNOWN
    special_ids = {
        "unk": unk_id,
        "bos": _special_id(reader, "bos_token_id", GEMMA_IDS["bos"], n),
        "eos": _special_id(reader, "eos_token_id", GEMMA_IDS["eos"], n),
        "pad": _special_id(reader, "padding_token_id", GEMMA_IDS["pad"], n),
    }
    add_space_prefix = gguf_value(reader, KEYS + "add_space_prefix", True)
    if not isinstance(add_space_prefix, bool):
        raise ValueError(f"{KEYS}add_space_prefix must be true or false, got {add_space_prefix!r}")
    return build_model_proto(
        pieces=[_proto_piece(t, ty) for t, ty in zip(tokens, types)],
        scores=scores,
        types=types,
        special_ids=special_ids,
        add_dummy_prefix=add_space_prefix,
    )


def _per_token(reader, key, default, n):
    """A per-token list of the vocabulary, which must have one entry per token."""
    values = gguf_value(reader, KEYS + key, default)
    if not isinstance(values, list) or len(values) != n:
        length = len(values) if isinstance(values, list) else type(values).__name__
        raise ValueError(f"{KEYS}{key} must list one entry per token: {n} tokens, {length} "
                         f"entries")
    return values


def _special_id(reader, key, default, n):
    token_id = gguf_value(reader, KEYS + key, default)
    if token_id is not None and (isinstance(token_id, bool) or not isinstance(token_id, int)
                                 or not 0 <= token_id < n):
        raise ValueError(f"{KEYS}{key} is {token_id!r}, outside the vocabulary of {n} tokens")
    return token_id


def _proto_piece(token, token_type):
    """GGUF token text -> SentencePiece piece text (user-defined spaces back to "▁")."""
    return token.replace(" ", SPACE) if token_type == USER_DEFINED else token


def build_model_proto(pieces, scores, types, special_ids, add_dummy_prefix):
    """Serialize a BPE ModelProto (bytes). pieces/scores/types: one entry per id; special_ids
    maps "unk"/"bos"/"eos"/"pad" to an id (-1 or None: absent)."""
    model = sp_pb2.ModelProto()
    for piece, score, token_type in zip(pieces, scores, types):
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, token_type
    trainer = model.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = BYTE in types
    for name in ("unk", "bos", "eos", "pad"):
        token_id = special_ids.get(name)
        token_id = -1 if token_id is None else int(token_id)
        setattr(trainer, f"{name}_id", token_id)
        if token_id >= 0:
            setattr(trainer, f"{name}_piece", pieces[token_id])
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = bool(add_dummy_prefix)
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return model.SerializeToString()
