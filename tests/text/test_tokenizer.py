"""Tests for minigemma.text.tokenizer.

Two oracles for the real Gemma 3 270M GGUF:
* HF transformers' tokenizer built from the same GGUF (`AutoTokenizer.from_pretrained(dir,
  gguf_file=...)`). HF registers every CONTROL piece as a special token and, by default, maps its
  text to the id: HF's default == our `parse_special=True`, HF `split_special_tokens=True` == our
  default. HF adds BOS by default for this GGUF (checked below), so BOS is on on both sides.
* llama.cpp's convention, emulated: cut the raw text at user-defined pieces (longest piece first,
  as `tokenizer_st_partition` does), then encode the fragments with HF.
The two agree except on runs of 32+ spaces (see `test_long_space_runs_follow_llama_cpp`).

The toy-vocabulary tests at the top need only `gguf` and run without the 250 MB model.
"""

import os
import random
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigemma.text.tokenizer import StreamDecoder, Tokenizer

from helpers.tokenizer_corpus import CORPUS, HAND_WRITTEN, NOT_ROUND_TRIPPING

gguf = pytest.importorskip("gguf")

LONG_SPACE_RUN = re.compile(r"[ \u2581]{32,}")  # longer than Gemma's longest space piece (31)


# ---------------------------------------------------------------------- a toy vocabulary


def write_toy_gguf(path, with_turns=True, model="llama", with_tokenizer=True):
    """A GGUF holding only a small SentencePiece vocabulary laid out like Gemma's."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"]
    types = [3, 3, 3, 3]
    if with_turns:
        tokens += ["<start_of_turn>", "<end_of_turn>"]
        types += [3, 3]
    tokens += ["\n", "\n\n", "  ", "   ", "<b>"]  # user-defined, spaces stored as spaces
    types += [4] * 5
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    normal = ["▁", "a", "b", "c", "d", "e", "h", "l", "o", "ab", "▁a", "he", "ll", "hell", "hello", "▁b"]
    tokens += normal
    types += [1] * len(normal)
    scores = [-1000.0 if t in (3, 4) else 0.0 for t in types]
    scores[-len(normal):] = [-float(i) for i in range(len(normal))]  # earlier = merged first

    writer = gguf.GGUFWriter(str(path), "gemma3")
    if with_tokenizer:
        writer.add_tokenizer_model(model)
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(2)
        writer.add_eos_token_id(1)
        writer.add_unk_token_id(3)
        writer.add_pad_token_id(0)
        writer.add_bool("tokenizer.ggml.add_space_prefix", False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tokens


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.gguf"
    tokens = write_toy_gguf(path)
    return Tokenizer.from_gguf(path), tokens


def test_toy_vocabulary(toy):
    tok, tokens = toy
    ids = {t: i for i, t in enumerate(tokens)}
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (len(tokens), 2, 1, 0, 3)
    assert (tok.start_of_turn_id, tok.end_of_turn_id) == (4, 5)
    assert tok.encode("hello") == [2, ids["hello"]]
    assert tok.encode("ab", add_bos=False) == [ids["ab"]]
    assert tok.encode("a b", add_bos=False) == [ids["a"], ids["▁b"]]
    # user-defined space runs are atomic (and stored in the proto as "▁▁")
    assert tok.encode("a  b", add_bos=False) == [ids["a"], ids["  "], ids["b"]]
    assert tok.encode("a     b", add_bos=False) == [ids["a"], ids["   "], ids["  "], ids["b"]]
    assert tok.id_to_piece(ids["  "]) == "▁▁"
    assert tok.encode("\n\n\n<b>", add_bos=False) == [ids["\n\n"], ids["\n"], ids["<b>"]]
    # byte fallback: é is not in the vocabulary
    assert tok.encode("é", add_bos=False) == [ids["<0xC3>"], ids["<0xA9>"]]
    assert tok.decode(tok.encode("a  é\n<b>")) == "a  é\n<b>"
    # control pieces: plain text unless parse_special
    assert 5 not in tok.encode("<end_of_turn>")
    assert tok.encode("<end_of_turn>a", parse_special=True) == [2, 5, ids["a"]]
    assert tok.decode([2, 4, ids["a"], 5, 1]) == "a"
    assert tok.decode([2, 4, ids["a"], 5, 1], skip_special=False) == "<bos><start_of_turn>a<end_of_turn><eos>"


def test_toy_without_turn_tokens(tmp_path):
    path = tmp_path / "noturn.gguf"
    write_toy_gguf(path, with_turns=False)
    tok = Tokenizer.from_gguf(path)
    assert tok.end_of_turn_id is None and tok.start_of_turn_id is None


def test_lookups_and_errors(toy):
    tok, tokens = toy
    assert tok.piece_to_id("<bos>") == 2
    assert tok.piece_to_id("▁▁") == tokens.index("  ")
    assert tok.token_id("<end_of_turn>") == 5
    assert tok.token_id("  ") == tokens.index("  ")
    assert tok.token_id("<b>") == tokens.index("<b>")
    assert tok.token_id("<unk>") == 3
    with pytest.raises(ValueError, match="not a piece"):
        tok.piece_to_id("zzz")
    with pytest.raises(ValueError, match="not a single token"):
        tok.token_id("<not_a_token>")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.id_to_piece(-1)
    assert tok.decode(np.array([11, 12], dtype=np.int64)) == tok.decode([11, 12])


# ---------------------------------------------------------------------- bad input


def test_random_bytes_are_not_a_tokenizer(tmp_path):
    path = tmp_path / "random.bin"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(ValueError, match="not a valid SentencePiece"):
        Tokenizer.from_file(path)
    with pytest.raises(ValueError, match="not a GGUF file"):
        Tokenizer.from_gguf(path)
    with pytest.raises(ValueError):
        Tokenizer.from_bytes(b"")
    (tmp_path / "text.model").write_text("hello, I am not a model\n")
    with pytest.raises(ValueError):
        Tokenizer.from_file(tmp_path / "text.model")


def test_gguf_without_tokenizer(tmp_path):
    path = tmp_path / "empty.gguf"
    write_toy_gguf(path, with_tokenizer=False)
    with pytest.raises(ValueError, match="no tokenizer"):
        Tokenizer.from_gguf(path)
    with pytest.raises(ValueError, match="is a GGUF file"):
        Tokenizer.from_file(path)


def test_gguf_with_other_tokenizer_model(tmp_path):
    path = tmp_path / "bpe.gguf"
    write_toy_gguf(path, model="gpt2")
    with pytest.raises(ValueError, match="not SentencePiece"):
        Tokenizer.from_gguf(path)


# ---------------------------------------------------------------------- the real GGUF


@pytest.fixture(scope="session")
def gguf_path(real_gguf_path):
    return real_gguf_path


@pytest.fixture(scope="session")
def tok(gguf_path):
    return Tokenizer.from_gguf(gguf_path)


@pytest.fixture(scope="session")
def hf(gguf_path):
    transformers = pytest.importorskip("transformers", reason="transformers is the tokenizer oracle")
    folder, name = os.path.split(gguf_path)
    return transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)


def hf_ids(hf, text, parse_special):
    return hf(text, split_special_tokens=not parse_special)["input_ids"]


def test_gemma3_ids(tok):
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (262144, 2, 1, 0, 3)
    assert (tok.start_of_turn_id, tok.end_of_turn_id) == (105, 106)
    assert tok.token_id("<start_of_turn>") == 105 and tok.token_id("<end_of_turn>") == 106
    assert tok.token_id("\n") == 107 and tok.token_id("  ") == 138 and tok.token_id("\t") == 255968
    assert tok.token_id("<start_of_image>") == 255999
    assert tok.id_to_piece(138) == "▁▁" and tok.id_to_piece(238) == "<0x00>"
    assert tok.encode("") == [2] and tok.encode("", add_bos=False) == []


def test_corpus_size():
    assert len(HAND_WRITTEN) >= 200 and len(CORPUS) >= 300


def test_hf_conventions(hf):
    """What the comparisons below rely on: HF adds BOS and parses control text by default."""
    assert hf("hi")["input_ids"][0] == 2
    assert hf("<start_of_turn>")["input_ids"] == [2, 105]
    assert 105 not in hf("<start_of_turn>", split_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("parse_special", [False, True])
def test_ids_match_hf(tok, hf, parse_special):
    compared = 0
    for text in CORPUS:
        if LONG_SPACE_RUN.search(text):
            continue  # see test_long_space_runs_follow_llama_cpp
        compared += 1
        ours, theirs = tok.encode(text, parse_special=parse_special), hf_ids(hf, text, parse_special)
        assert ours == theirs, (text, ours, theirs)
    assert compared >= 300
    # and without BOS
    for text in HAND_WRITTEN[:50]:
        ours = tok.encode(text, add_bos=False, parse_special=parse_special)
        assert ours == hf(text, add_special_tokens=False, split_special_tokens=not parse_special)["input_ids"]


def llama_cpp_style_ids(hf, user_defined, control, text, parse_special):
    """llama.cpp's recipe: cut out atomic pieces longest first, encode the rest (here with HF)."""
    atomic = dict(user_defined, **(control if parse_special else {}))
    fragments = [text]  # str: raw text still to encode, int: a token id
    for piece in sorted((p for p in atomic if p in text), key=len, reverse=True):
        cut = []
        for frag in fragments:
            if isinstance(frag, int):
                cut.append(frag)
                continue
            parts = frag.split(piece)
            for k, part in enumerate(parts):
                if k:
                    cut.append(atomic[piece])
                if part:
                    cut.append(part)
        fragments = cut
    ids = [2]
    for frag in fragments:
        ids += [frag] if isinstance(frag, int) else hf_ids(hf, frag, False)[1:]
    return ids


@pytest.fixture(scope="session")
def atomic_pieces(hf):
    """(user-defined text -> id, control text -> id) as HF sees the GGUF."""
    added = hf.added_tokens_decoder  # id -> AddedToken
    control = {t.content: i for i, t in added.items() if t.special}
    user_defined = {t.content: i for i, t in added.items() if not t.special}
    # HF keeps the space runs (ids 138..167) in its BPE vocabulary as "▁▁".. rather than as added tokens
    for i, piece in enumerate(hf.convert_ids_to_tokens(list(range(138, 168))), start=138):
        assert set(piece) == {"▁"}
        user_defined[" " * len(piece)] = i
    return user_defined, control


@pytest.mark.parametrize("parse_special", [False, True])
def test_ids_match_llama_cpp_convention(tok, hf, atomic_pieces, parse_special):
    for text in CORPUS:
        expected = llama_cpp_style_ids(hf, *atomic_pieces, text, parse_special)
        assert tok.encode(text, parse_special=parse_special) == expected, text


def test_long_space_runs_follow_llama_cpp(tok, hf):
    """Runs of 32+ spaces: the one place HF-from-GGUF and llama.cpp/SentencePiece differ.

    HF keeps "▁▁".."▁"*31 as BPE merges, so 32 spaces merge pairwise into 16 + 16; llama.cpp (and
    SentencePiece, where they are USER_DEFINED) cut the longest piece first: 31 + 1, the single
    space then joining the next word. We follow llama.cpp / SentencePiece.
    """
    assert tok.encode("x" + " " * 32 + "y") == [2, 236781, 167, 570]
    assert hf_ids(hf, "x" + " " * 32 + "y", False) == [2, 236781, 152, 152, 236762]
    assert tok.encode(" " * 33) == [2, 167, 138] and tok.decode(tok.encode(" " * 70)) == " " * 70


@pytest.mark.parametrize("parse_special", [False, True])
def test_decode_matches_hf(tok, hf, parse_special):
    for text in CORPUS:
        ids = tok.encode(text, parse_special=parse_special)
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
        assert tok.decode(ids, skip_special=False) == hf.decode(ids, skip_special_tokens=False), text


def test_round_trip(tok):
    # Only strings containing a literal "▁" (U+2581) fail: it encodes exactly like a space.
    failures = [text for text in CORPUS if tok.decode(tok.encode(text)) != text]
    assert failures == NOT_ROUND_TRIPPING
    assert tok.decode(tok.encode("a▁b")) == "a b"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 262143) | st.integers(238, 493), max_size=30))
def test_decode_of_any_ids_matches_hf(tok, hf, ids):
    """Random ids, byte pieces included: equal to HF, except that for invalid UTF-8 HF writes one
    U+FFFD per byte piece of the bad run and we follow Python's "replace" (at least one)."""
    ours, theirs = tok.decode(ids), hf.decode(ids, skip_special_tokens=True)
    if "\ufffd" in theirs:
        assert "\ufffd" in ours
    else:
        assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_ids_match_hf_on_random_text(tok, hf, text):
    if not LONG_SPACE_RUN.search(text):
        assert tok.encode(text) == hf_ids(hf, text, False)
        assert tok.encode(text, parse_special=True) == hf_ids(hf, text, True)


# ---------------------------------------------------------------------- parse_special


SPECIALS = ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unused7>", "<mask>"]
SEGMENT = st.text(st.characters(exclude_characters="<>", exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(SEGMENT, st.sampled_from(SPECIALS)), max_size=5), SEGMENT)
def test_parse_special_splits_on_special_tokens(tok, pairs, tail):
    text = "".join(seg + special for seg, special in pairs) + tail
    expected = [2]
    for seg, special in pairs:
        expected += tok.encode(seg, add_bos=False) + [tok.token_id(special)]
    expected += tok.encode(tail, add_bos=False)
    assert tok.encode(text, parse_special=True) == expected


def test_chat_turns(tok):
    ids = tok.encode("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", parse_special=True)
    assert ids[:2] == [2, 105] and ids.count(105) == 2 and ids.count(106) == 1
    assert ids[1:] == (
        [105] + tok.encode("user\nHi", add_bos=False) + [106]
        + tok.encode("\n", add_bos=False) + [105] + tok.encode("model\n", add_bos=False)
    )
    plain = tok.encode("<start_of_turn>user\n")
    assert 105 not in plain and tok.decode(plain) == "<start_of_turn>user\n"


# ---------------------------------------------------------------------- streaming


def stream(tok, ids):
    decoder = tok.stream_decoder()
    pieces = [decoder.feed(i) for i in ids]
    return pieces + [decoder.flush()]


# Text heavy in multi-byte characters: emoji (ZWJ sequences, flags) and rare characters that
# fall back to byte pieces, mixed with whitespace and arbitrary code points.
EMOJI_HEAVY = st.lists(
    st.sampled_from(["a", "b", " ", "  ", "\n", "\t", "é", "中", "😀", "👨‍👩‍👧", "🇫🇷", "𓀀", "\ue000", "ꦧ", "\u0378"])
    | st.characters(exclude_categories=("Cs",)),
    max_size=30,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(EMOJI_HEAVY)
def test_stream_decoder_on_text(tok, text):
    ids = tok.encode(text)
    pieces = stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids) == text.replace("\u2581", " ")
    assert not any("\ufffd" in p for p in pieces) or "\ufffd" in text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(238, 493) | st.integers(0, 262143), max_size=30))
def test_stream_decoder_on_any_ids(tok, ids):
    """Arbitrary byte pieces (often invalid UTF-8): still the same text as decode()."""
    pieces = stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids)


def test_stream_decoder_holds_back_partial_characters(tok):
    ids = tok.encode("𓀀!", add_bos=False)  # a rare character: four byte pieces
    assert [tok.id_to_piece(i) for i in ids[:4]] == ["<0xF0>", "<0x93>", "<0x80>", "<0x80>"]
    decoder = StreamDecoder(tok)
    assert [decoder.feed(i) for i in ids] == ["", "", "", "𓀀", "!"]
    assert decoder.feed(ids[0]) == "" and decoder.flush() == "\ufffd"  # truncated at the end


# ---------------------------------------------------------------------- saving as tokenizer.model


def test_serialized_model_round_trip(tok, tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(tok.serialized_model())
    for again in (Tokenizer.from_file(path), Tokenizer.from_file(tmp_path), Tokenizer.from_bytes(path.read_bytes())):
        assert again.vocab_size == tok.vocab_size and again.end_of_turn_id == 106
        for text in CORPUS:
            assert again.encode(text) == tok.encode(text)
            assert again.encode(text, parse_special=True) == tok.encode(text, parse_special=True)
        assert again.serialized_model() == tok.serialized_model()


def test_plain_sentencepiece_reads_the_model(tok):
    """The proto is an ordinary SentencePiece model: the library alone gives the same ids."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=tok.serialized_model())
    for text in HAND_WRITTEN:
        assert [sp.bos_id()] + sp.encode(text) == tok.encode(text)
