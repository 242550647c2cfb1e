"""A GGUF file's vocabulary -> a serialized SentencePiece model (docs/formats.md#gguf).

A GGUF stores the vocabulary as metadata (llama.cpp's keys); `tokenizer.ggml.model == "llama"`
means SentencePiece. We turn it back into a serialized SentencePiece `ModelProto`, written by hand
with the few protobuf wire-format rules it needs (see `_pb_*` below), so that no `protobuf`
package is required; `minigemma.text.tokenizer.Tokenizer.from_gguf` loads the result.

* `pieces` (one per id, in id order) from `tokenizer.ggml.tokens` / `.scores` / `.token_type`.
  GGUF token types use SentencePiece's own numbering and map one to one:
  1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE (`<0x00>`..`<0xFF>`).
  Two fixes:
  - the piece at `tokenizer.ggml.unknown_token_id` becomes UNKNOWN (Gemma's GGUF marks `<unk>`
    CONTROL, but SentencePiece needs exactly one UNKNOWN piece);
  - in USER_DEFINED pieces a plain space is written back as "▁" (U+2581). llama.cpp's converter
    stores Gemma's space runs as real spaces (`"  "`, id 138...), but SentencePiece escapes spaces
    to "▁" before it looks for user-defined pieces, so `"  "` would never match.
* `trainer_spec`: model_type BPE, vocab_size, byte_fallback (when byte pieces exist), and the
  unk/bos/eos/pad ids and piece strings (from `tokenizer.ggml.*_token_id`).
* `normalizer_spec`: the identity normalizer, add_dummy_prefix = `tokenizer.ggml.add_space_prefix`
  (False for Gemma), remove_extra_whitespaces False, escape_whitespaces True (" " -> "▁").

SentencePiece then behaves like the original model: user-defined pieces (newline/space/tab runs,
HTML-like tags, `<start_of_image>`) are matched whole and never merged, everything else is BPE by
piece score (Gemma's scores fall with the id, so this is also the merge order HF uses), characters
outside the vocabulary fall back to byte pieces, and CONTROL pieces are never produced from text.
"""
import struct

from minigemma.formats.gguf.reader import gguf_value

# SentencePiece piece types (ModelProto.SentencePiece.Type). GGUF's token_type uses the same numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # "▁": how SentencePiece writes a space inside a piece
_BPE = 2  # TrainerSpec.ModelType.BPE


def proto_from_gguf(reader):
    """Serialized SentencePiece ModelProto (bytes) for the tokenizer stored in an open GGUF
    (see the module docstring)."""
    model = gguf_value(reader, "tokenizer.ggml.model", None)
    tokens = gguf_value(reader, "tokenizer.ggml.tokens", None)
    if model is None or tokens is None:
        raise ValueError("GGUF file has no tokenizer (no tokenizer.ggml.model / tokenizer.ggml.tokens)")
    if model != "llama":
        raise ValueError(f"GGUF tokenizer model {model!r} is not SentencePiece ('llama'); not supported")
    n = len(tokens)
    scores = gguf_value(reader, "tokenizer.ggml.scores", [0.0] * n)
    types = gguf_value(reader, "tokenizer.ggml.token_type", [NORMAL] * n)
    unk_id = gguf_value(reader, "tokenizer.ggml.unknown_token_id", 0)
    # llama.cpp's type 0 (undefined) has no SentencePiece equivalent: call it NORMAL.
    types = [t if NORMAL <= t <= BYTE else NORMAL for t in types]
    types[unk_id] = UNKNOWN
    # Absent ids take SentencePiece's defaults (unk 0, bos 1, eos 2, no pad).
    special_ids = {
        "unk": unk_id,
        "bos": gguf_value(reader, "tokenizer.ggml.bos_token_id", 1),
        "eos": gguf_value(reader, "tokenizer.ggml.eos_token_id", 2),
        "pad": gguf_value(reader, "tokenizer.ggml.padding_token_id", -1),
    }
    return build_model_proto(
        pieces=[_proto_piece(t, ty) for t, ty in zip(tokens, types)],
        scores=scores,
        types=types,
        special_ids=special_ids,
        add_dummy_prefix=bool(gguf_value(reader, "tokenizer.ggml.add_space_prefix", True)),
    )


def _proto_piece(token, token_type):
    """GGUF token text -> SentencePiece piece text (user-defined spaces back to "▁")."""
    return token.replace(" ", SPACE) if token_type == USER_DEFINED else token


def build_model_proto(pieces, scores, types, special_ids, add_dummy_prefix):
    """Serialize a BPE ModelProto (bytes). pieces/scores/types: one entry per id; special_ids
    maps "unk"/"bos"/"eos"/"pad" to an id (-1 or None: absent)."""
    out = bytearray()
    for piece, score, token_type in zip(pieces, scores, types):
        # ModelProto.pieces (1): SentencePiece {piece = 1; score = 2; type = 3}
        entry = _pb_str(1, piece) + _pb_float(2, score) + _pb_int(3, token_type)
        out += _pb_bytes(1, entry)
    trainer = _pb_int(3, _BPE) + _pb_int(4, len(pieces)) + _pb_int(35, int(BYTE in types))
    for name, (id_field, piece_field) in _SPECIAL_FIELDS.items():
        token_id = special_ids.get(name)
        token_id = -1 if token_id is None else int(token_id)
        trainer += _pb_int(id_field, token_id)
        if token_id >= 0:
            trainer += _pb_str(piece_field, pieces[token_id])
    normalizer = (
        _pb_str(1, "identity")
        + _pb_int(3, int(add_dummy_prefix))  # add_dummy_prefix
        + _pb_int(4, 0)  # remove_extra_whitespaces
        + _pb_int(5, 1)  # escape_whitespaces
    )
    out += _pb_bytes(2, trainer) + _pb_bytes(3, normalizer)
    return bytes(out)


# TrainerSpec field numbers of each special token's (id, piece string).
_SPECIAL_FIELDS = {"unk": (40, 45), "bos": (41, 46), "eos": (42, 47), "pad": (43, 48)}


# Protobuf wire format: each field is varint(field_number << 3 | wire_type) then the value.
def _pb_varint(n):
    n &= (1 << 64) - 1  # negative int32/int64 are sent as 64-bit two's complement
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_int(field, n):  # wire type 0: varint (int32, bool, enum)
    return _pb_varint(field << 3) + _pb_varint(n)


def _pb_float(field, x):  # wire type 5: 32-bit little-endian
    return _pb_varint(field << 3 | 5) + struct.pack("<f", x)


def _pb_bytes(field, data):  # wire type 2: length-delimited
    return _pb_varint(field << 3 | 2) + _pb_varint(len(data)) + data


def _pb_str(field, s):
    return _pb_bytes(field, s.encode("utf-8"))
