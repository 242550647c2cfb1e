"""Gemma's tokenizer: a SentencePiece BPE model, loaded from a GGUF file or a `tokenizer.model`.

The `sentencepiece` library does all the encoding; this module only feeds it the right model and
adds what SentencePiece leaves to its callers: the BOS id, splitting out control-token text such as
`<start_of_turn>` when asked to, decoding that skips control tokens, and streaming decode.

From a GGUF file
----------------
A GGUF stores the vocabulary as metadata (llama.cpp's keys); `tokenizer.ggml.model == "llama"`
means SentencePiece. We turn it back into a serialized SentencePiece `ModelProto`, written by hand
with the few protobuf wire-format rules it needs (see `_pb_*` below), so that no `protobuf`
package is required:

* `pieces` (one per id, in id order) from `tokenizer.ggml.tokens` / `.scores` / `.token_type`.
  GGUF token types use SentencePiece's own numbering and map one to one:
  1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE (`<0x00>`..`<0xFF>`).
  Two fixes:
  - the piece at `tokenizer.ggml.unknown_token_id` becomes UNKNOWN (Gemma's GGUF marks `<unk>`
    CONTROL, but SentencePiece needs exactly one UNKNOWN piece);
  - in USER_DEFINED pieces a plain space is written back as "▁" (U+2581). llama.cpp's converter
    stores Gemma's space runs as real spaces (`"  "`, id 138...), but SentencePiece escapes spaces
    to "▁" *before* it looks for user-defined pieces, so `"  "` would never match.
* `trainer_spec`: model_type BPE, vocab_size, byte_fallback (when byte pieces exist), and the
  unk/bos/eos/pad ids and piece strings (from `tokenizer.ggml.*_token_id`).
* `normalizer_spec`: the identity normalizer, add_dummy_prefix = `tokenizer.ggml.add_space_prefix`
  (False for Gemma), remove_extra_whitespaces False, escape_whitespaces True (" " -> "▁").

SentencePiece then behaves like the original model: user-defined pieces (newline/space/tab runs,
HTML-like tags, `<start_of_image>`) are matched whole and never merged, everything else is BPE by
piece score (Gemma's scores fall with the id, so this is also the merge order HF uses), characters
outside the vocabulary fall back to byte pieces, and CONTROL pieces are never produced from text.

Compatibility
-------------
* `encode(text)` == HF `tok(text, split_special_tokens=True)` (and llama.cpp with
  parse_special=false): control-token text is ordinary text.
* `encode(text, parse_special=True)` == HF's *default* `tok(text)`: HF registers every CONTROL
  piece of a GGUF (`<bos>`, `<start_of_turn>`, `<unused0>`, `<pad>`...) as a special token and maps
  its text to the id. Chat templates want this; user text should not get it.
* `decode(ids)` == HF `decode(ids, skip_special_tokens=True)` (CONTROL and UNKNOWN pieces are
  dropped; USER_DEFINED pieces such as `<start_of_image>` are kept), except for *invalid* UTF-8
  from byte pieces: we decode the byte string with errors="replace" (like llama.cpp's callers do),
  HF writes one U+FFFD per byte of a bad run of byte pieces. Both give U+FFFD; the counts can differ.
"""

from __future__ import annotations

import codecs
import re
import struct
from pathlib import Path

import numpy as np
import sentencepiece as spm

# SentencePiece piece types (ModelProto.SentencePiece.Type). GGUF's token_type uses the same numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # "▁": how SentencePiece writes a space inside a piece
_BPE = 2  # TrainerSpec.ModelType.BPE


class Tokenizer:
    """Text <-> token ids for Gemma (1/2/3) SentencePiece vocabularies.

    Build with `from_gguf`, `from_file` or `from_bytes`; the constructor takes a serialized
    SentencePiece `ModelProto`.
    """

    def __init__(self, serialized: bytes):
        self._sp = _load_processor(serialized)
        sp = self._sp
        n = sp.get_piece_size()
        # Pieces that are never text: CONTROL and UNKNOWN (HF's "special tokens" for this vocab).
        # Per-id data is asked of SentencePiece when needed rather than copied into Python lists:
        # three lists over 262 144 pieces would cost ~55 MB of the process.
        self._is_special = np.fromiter((sp.is_control(i) or sp.is_unknown(i) for i in range(n)),
                                       dtype=bool, count=n)
        # Special-token text -> id, and a regex finding such text (longest alternative first).
        self._special_ids: dict[str, int] = {
            sp.id_to_piece(int(i)): int(i) for i in np.flatnonzero(self._is_special)
        }
        alternatives = sorted(self._special_ids, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_gguf(cls, path_or_reader) -> "Tokenizer":
        """Read the SentencePiece vocabulary of a GGUF file (path or an open `gguf.GGUFReader`)."""
        reader = _open_gguf(path_or_reader)
        try:
            return cls(proto_from_gguf(reader))
        except ValueError as err:
            name = "GGUF" if reader is path_or_reader else path_or_reader
            raise ValueError(f"{name}: {err}") from None

    @classmethod
    def from_file(cls, path) -> "Tokenizer":
        """Load a SentencePiece `tokenizer.model` (or a folder holding one, as HF checkpoints do)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.model"
        data = path.read_bytes()
        if data[:4] == b"GGUF":
            raise ValueError(f"{path} is a GGUF file, not a tokenizer.model; use Tokenizer.from_gguf")
        return cls.from_bytes(data, name=str(path))

    @classmethod
    def from_bytes(cls, serialized: bytes, name: str = "<bytes>") -> "Tokenizer":
        """Build from a serialized SentencePiece `ModelProto` (the content of a tokenizer.model)."""
        try:
            return cls(bytes(serialized))
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None

    def serialized_model(self) -> bytes:
        """The SentencePiece `ModelProto`; write it to `tokenizer.model` and `from_file` reads it back."""
        return self._sp.serialized_model_proto()

    # ------------------------------------------------------------------ properties

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def pad_id(self) -> int | None:
        return None if self._sp.pad_id() < 0 else self._sp.pad_id()

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    @property
    def start_of_turn_id(self) -> int | None:
        """Id of `<start_of_turn>` (105 in Gemma 2/3), None for vocabularies without it."""
        return self._special_ids.get("<start_of_turn>")

    @property
    def end_of_turn_id(self) -> int | None:
        """Id of `<end_of_turn>` (106 in Gemma 2/3), None for vocabularies without it."""
        return self._special_ids.get("<end_of_turn>")

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_id}, eos={self.eos_id})"

    # ------------------------------------------------------------------ pieces and ids

    def id_to_piece(self, token_id: int) -> str:
        """The vocabulary entry for an id, as SentencePiece spells it (spaces as "▁")."""
        return self._sp.id_to_piece(self._check_id(token_id))

    def piece_to_id(self, piece: str) -> int:
        """Id of a vocabulary entry spelled as SentencePiece does ("▁hello", "<0x41>", "<bos>")."""
        token_id = self._sp.piece_to_id(piece)
        if self._sp.id_to_piece(token_id) != piece:  # SentencePiece answers unk_id for unknown pieces
            raise ValueError(f"{piece!r} is not a piece of this vocabulary")
        return token_id

    def token_id(self, text: str) -> int:
        """Id of the one token `text` stands for: a special token ("<end_of_turn>", "<bos>") or any
        text that is a single token ("<start_of_image>", "\\n", "  ", "hello")."""
        if text in self._special_ids:
            return self._special_ids[text]
        ids = self._sp.encode_as_ids(text)
        if len(ids) != 1 or ids[0] == self.unk_id:
            raise ValueError(f"{text!r} is not a single token of this vocabulary (it encodes to {ids})")
        return ids[0]

    def is_special(self, token_id: int) -> bool:
        """True for CONTROL and UNKNOWN pieces: the ids `decode` skips."""
        return bool(self._is_special[self._check_id(token_id)])

    def _check_id(self, token_id) -> int:
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return token_id

    # ------------------------------------------------------------------ encode / decode

    def encode(self, text: str, add_bos: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`, with BOS first when `add_bos`.

        parse_special=False: everything is text, "<end_of_turn>" becomes "<", "end", "_"...
        parse_special=True: the text of CONTROL/UNKNOWN pieces ("<start_of_turn>", "<bos>"...)
        becomes their id, the text around them is encoded as usual (HF's default behaviour).
        """
        ids = [self.bos_id] if add_bos and self.bos_id >= 0 else []
        if not parse_special or self._special_re is None:
            return ids + self._sp.encode_as_ids(text)
        start = 0
        for match in self._special_re.finditer(text):
            ids += self._sp.encode_as_ids(text[start : match.start()])
            ids.append(self._special_ids[match.group()])
            start = match.end()
        return ids + self._sp.encode_as_ids(text[start:])

    def decode(self, ids, skip_special: bool = True) -> str:
        """Text of `ids`. With skip_special (the default, like HF skip_special_tokens=True) CONTROL
        and UNKNOWN pieces (BOS, EOS, pad, <start_of_turn>, <end_of_turn>, <unused..>) are dropped;
        without it they are written as their piece text."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def decode_bytes(self, ids, skip_special: bool = True) -> bytes:
        """The UTF-8 bytes `ids` stand for (possibly an incomplete character at the end)."""
        return b"".join(self._token_bytes(i, skip_special) for i in ids)

    def _token_bytes(self, token_id, skip_special: bool) -> bytes:
        token_id = self._check_id(token_id)
        if self._is_special[token_id] and not skip_special:
            return self._sp.id_to_piece(token_id).encode("utf-8")
        return _piece_bytes(self._sp, token_id, self._sp.id_to_piece(token_id))

    def stream_decoder(self, skip_special: bool = True) -> "StreamDecoder":
        return StreamDecoder(self, skip_special)


class StreamDecoder:
    """Decodes token ids one at a time, e.g. while sampling.

    `feed(id)` returns the text that id completes: bytes of a character split over several byte
    pieces are held back until the character is complete, so no U+FFFD appears for a sequence that
    is merely unfinished. `flush()` returns what is left at the end (U+FFFD for a truncated
    character). The concatenation of all returned strings equals `tokenizer.decode(all_ids)`.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._utf8.decode(self._tokenizer._token_bytes(token_id, self._skip_special))

    __call__ = feed

    def flush(self) -> str:
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text


# ---------------------------------------------------------------------- helpers for Tokenizer


def _load_processor(serialized: bytes) -> spm.SentencePieceProcessor:
    """A SentencePieceProcessor for a serialized ModelProto; ValueError if it is not one."""
    if not serialized:
        raise ValueError("empty data is not a SentencePiece model")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load_from_serialized_proto(serialized)
    except Exception as err:  # sentencepiece raises RuntimeError/OSError with C++ status text
        raise ValueError(f"not a valid SentencePiece tokenizer model ({err})") from None
    if sp.get_piece_size() == 0:
        raise ValueError("SentencePiece model has no pieces")
    return sp


def _piece_bytes(sp: spm.SentencePieceProcessor, i: int, piece: str) -> bytes:
    """What id `i` contributes to decoded text: a byte for byte pieces, nothing for CONTROL /
    UNKNOWN pieces, otherwise the piece with "▁" turned back into a space."""
    if sp.is_byte(i):
        return bytes([int(piece[3:5], 16)])  # "<0xE2>" -> b"\xe2"
    if sp.is_control(i) or sp.is_unknown(i):
        return b""
    return piece.replace(SPACE, " ").encode("utf-8")


# ---------------------------------------------------------------------- GGUF -> ModelProto


def _open_gguf(path_or_reader):
    from gguf import GGUFReader

    if isinstance(path_or_reader, GGUFReader):
        return path_or_reader
    path = Path(path_or_reader)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF')")
    try:
        return GGUFReader(path)
    except Exception as err:
        raise ValueError(f"{path}: cannot read GGUF file ({err})") from None


def _field(reader, key: str, default=None):
    """A GGUF metadata value as a Python value (str, int, float, bool or list), or `default`."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def proto_from_gguf(reader) -> bytes:
    """Serialized SentencePiece ModelProto for the tokenizer stored in a GGUF (see module doc)."""
    model = _field(reader, "tokenizer.ggml.model")
    tokens: list[str] | None = _field(reader, "tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise ValueError("GGUF file has no tokenizer (no tokenizer.ggml.model / tokenizer.ggml.tokens)")
    if model != "llama":
        raise ValueError(f"GGUF tokenizer model {model!r} is not SentencePiece ('llama'); not supported")
    n = len(tokens)
    scores: list[float] = _field(reader, "tokenizer.ggml.scores", [0.0] * n)
    types: list[int] = _field(reader, "tokenizer.ggml.token_type", [NORMAL] * n)
    unk_id = _field(reader, "tokenizer.ggml.unknown_token_id", 0)
    # llama.cpp's type 0 (undefined) has no SentencePiece equivalent: call it NORMAL.
    types = [t if NORMAL <= t <= BYTE else NORMAL for t in types]
    types[unk_id] = UNKNOWN
    special_ids = {
        "unk": unk_id,
        "bos": _field(reader, "tokenizer.ggml.bos_token_id", 1),
        "eos": _field(reader, "tokenizer.ggml.eos_token_id", 2),
        "pad": _field(reader, "tokenizer.ggml.padding_token_id", -1),
    }
    return build_model_proto(
        pieces=[_proto_piece(t, ty) for t, ty in zip(tokens, types)],
        scores=scores,
        types=types,
        special_ids=special_ids,
        add_dummy_prefix=bool(_field(reader, "tokenizer.ggml.add_space_prefix", True)),
    )


def _proto_piece(token: str, token_type: int) -> str:
    """GGUF token text -> SentencePiece piece text (user-defined spaces back to "▁")."""
    return token.replace(" ", SPACE) if token_type == USER_DEFINED else token


def build_model_proto(pieces, scores, types, special_ids: dict, add_dummy_prefix: bool) -> bytes:
    """Serialize a BPE ModelProto. pieces/scores/types: one entry per id; special_ids maps
    "unk"/"bos"/"eos"/"pad" to an id (-1 or None: absent)."""
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
def _pb_varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 are sent as 64-bit two's complement
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_int(field: int, n: int) -> bytes:  # wire type 0: varint (int32, bool, enum)
    return _pb_varint(field << 3) + _pb_varint(n)


def _pb_float(field: int, x: float) -> bytes:  # wire type 5: 32-bit little-endian
    return _pb_varint(field << 3 | 5) + struct.pack("<f", x)


def _pb_bytes(field: int, data: bytes) -> bytes:  # wire type 2: length-delimited
    return _pb_varint(field << 3 | 2) + _pb_varint(len(data)) + data


def _pb_str(field: int, s: str) -> bytes:
    return _pb_bytes(field, s.encode("utf-8"))
