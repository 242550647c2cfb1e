"""Gemma's tokenizer: a SentencePiece BPE model, loaded from a GGUF file or a `tokenizer.model`.

The `sentencepiece` library does all the encoding; this module only feeds it the right model and
adds what SentencePiece leaves to its callers: the BOS id, splitting out control-token text such as
`<start_of_turn>` when asked to, decoding that skips control tokens, and streaming decode.

From a GGUF file
----------------
A GGUF stores the vocabulary as metadata; `minigemma.formats.gguf.vocabulary` turns it back into a
serialized SentencePiece `ModelProto` (how, and the two fixes it needs, is written there), and
`from_gguf` loads that.

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
from pathlib import Path

import numpy as np
import sentencepiece as spm

from minigemma.formats.files import read_bytes
from minigemma.formats.gguf.reader import open_gguf, source_name

# The GGUF vocabulary -> ModelProto code lives with the format, beside SentencePiece's piece types.
from minigemma.formats.gguf.vocabulary import SPACE, proto_from_gguf

MODEL_LIMIT = 256 * 1024 * 1024  # a tokenizer.model larger than this is not one (Gemma's: 4.7 MB)


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
        reader = open_gguf(path_or_reader)
        try:
            return cls(proto_from_gguf(reader))
        except ValueError as err:
            raise ValueError(f"{source_name(reader)}: {err}") from None

    @classmethod
    def from_file(cls, path) -> "Tokenizer":
        """Load a SentencePiece `tokenizer.model` (or a folder holding one, as HF checkpoints do)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.model"
        data = read_bytes(path, "tokenizer.model", MODEL_LIMIT)
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
        _check_text(piece)
        token_id = self._sp.piece_to_id(piece)
        if self._sp.id_to_piece(token_id) != piece:  # SentencePiece answers unk_id for unknown pieces
            raise ValueError(f"{piece!r} is not a piece of this vocabulary")
        return token_id

    def token_id(self, text: str) -> int:
        """Id of the one token `text` stands for: a special token ("<end_of_turn>", "<bos>") or any
        text that is a single token ("<start_of_image>", "\\n", "  ", "hello")."""
        _check_text(text)
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
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(f"a token id is an integer, got {token_id!r}")
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
        _check_text(text)
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


_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _check_text(text) -> None:
    """TypeError unless `text` is a str, ValueError unless UTF-8 can encode it (a lone
    surrogate, as from undecodable command-line bytes, cannot be: SentencePiece would fail)."""
    if not isinstance(text, str):
        raise TypeError(f"text to encode must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"the text holds {text[e.start:e.end]!r} at position {e.start}, which "
                         f"is not a character (a lone surrogate, e.g. from bytes that are not "
                         f"UTF-8)") from None


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
    if sp.is_byte(i) and _BYTE_PIECE.fullmatch(piece):
        return bytes([int(piece[3:5], 16)])  # "<0xE2>" -> b"\xe2"
    if sp.is_control(i) or sp.is_unknown(i):
        return b""
    return piece.replace(SPACE, " ").encode("utf-8")
