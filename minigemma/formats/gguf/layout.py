"""The structure of a GGUF file, checked before the `gguf` package parses it
(docs/formats.md#gguf).

The `gguf` package's reader trusts the file: a truncated download fails deep inside NumPy, a
tensor offset near 2⁶⁴ wraps around and the tensor is read shifted, an array length near 2⁶⁴
loops until the memory runs out, a key that is not UTF-8 leaks a UnicodeDecodeError.
`check_layout` walks the header once, the way llama.cpp's `gguf_init_from_file` does, and
refuses with a ValueError naming the file and the key or tensor:

    magic "GGUF", version 2 or 3 (little-endian), tensor and key counts;
    each key: UTF-8, unique, a known value type, every length within the file;
    each tensor info: UTF-8 unique name, 1–4 dims, a known ggml type whose block divides the
    first dim, an offset equal to where the previous tensor ends, padded to the alignment
    (`general.alignment`, a power of two, else 32) — which rules out overlapping, shifted and
    wrapped-around offsets — and its data inside the file.

Layout (GGUF spec): u32 magic, u32 version, u64 n_tensors, u64 n_kv; n_kv × (string key,
u32 type, value); n_tensors × (string name, u32 n_dims, n_dims × u64 dim, u32 ggml type,
u64 offset); padding to the alignment; the data. A string is u64 length + UTF-8 bytes; an array
is u32 item type + u64 count + the items.
"""
import mmap
import os
import struct

import gguf

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 4  # arrays of arrays: deeper than any llama.cpp writes
# GGUF value type -> (name, struct format) for the fixed-size scalars
SCALARS = {0: ("UINT8", "<B"), 1: ("INT8", "<b"), 2: ("UINT16", "<H"), 3: ("INT16", "<h"),
           4: ("UINT32", "<I"), 5: ("INT32", "<i"), 6: ("FLOAT32", "<f"), 7: ("BOOL", "<?"),
           10: ("UINT64", "<Q"), 11: ("INT64", "<q"), 12: ("FLOAT64", "<d")}
STRING, ARRAY = 8, 9


class _Header:
    """A cursor over the file's bytes; every read is bounds-checked against the file size."""

    def __init__(self, data, path):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what, problem):
        raise ValueError(f"{self.path}: {what}: {problem}")

    def take(self, n, what):
        if n > len(self.data) - self.pos:
            self.fail(what, f"needs {n} bytes at byte {self.pos} but the file ends at byte "
                            f"{len(self.data)} (truncated or corrupt)")
        start = self.pos
        self.pos += n
        return start

    def scalar(self, fmt, what):
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, start)[0]

    def string(self, what):
        n = self.scalar("<Q", what)
        start = self.take(n, what)
        try:
            return bytes(self.data[start:start + n]).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(what, f"the string at byte {start} is not UTF-8")

    def skip_value(self, vtype, what, depth=0):
        """Step over one value of GGUF type `vtype`; returns it for scalars and strings."""
        if vtype in SCALARS:
            return self.scalar(SCALARS[vtype][1], what)
        if vtype == STRING:
            return self.string(what)
        if vtype != ARRAY:
            self.fail(what, f"unknown value type {vtype}")
        if depth >= MAX_NESTING:
            self.fail(what, "arrays nested too deeply")
        item_type, count = self.scalar("<I", what), self.scalar("<Q", what)
        if item_type in SCALARS:  # fixed size: one bounds check for the whole array
            self.take(count * struct.calcsize(SCALARS[item_type][1]), what)
            return None
        if item_type not in (STRING, ARRAY):
            self.fail(what, f"array of unknown value type {item_type}")
        if count > (len(self.data) - self.pos) // 8:  # every item takes at least 8 bytes
            self.fail(what, f"an array of {count} items cannot fit in the file")
        for i in range(count):
            self.skip_value(item_type, what, depth + 1)
        return None


def check_layout(path):
    """ValueError naming `path` and the key or tensor unless the file's header and tensor
    layout are sound (see the module docstring). Returns nothing; reads only the header."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError(f"{path} is not a GGUF file: it is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            view = memoryview(data)
            try:
                _check(_Header(view, path))
            finally:
                view.release()  # before the map closes, also when an error holds the frames


def _check(h):
    start = h.take(4, "magic")
    magic = bytes(h.data[start:start + 4])
    if magic != MAGIC:
        h.fail("magic", f"{magic!r} is not b'GGUF': not a GGUF file")
    version = h.scalar("<I", "version")
    if version not in VERSIONS:
        h.fail("version", f"GGUF version {version} is not supported (only "
                          f"{' and '.join(map(str, VERSIONS))}; a big-endian file reads as a "
                          f"huge version)")
    n_tensors, n_kv = h.scalar("<Q", "tensor count"), h.scalar("<Q", "metadata key count")
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    keys = set()
    for i in range(n_kv):
        key = h.string(f"metadata key {i}")
        if key in keys:
            h.fail(f"metadata key {key!r}", "appears twice")
        keys.add(key)
        vtype = h.scalar("<I", f"metadata key {key!r}")
        value = h.skip_value(vtype, f"metadata key {key!r}")
        if key == "general.alignment":
            if vtype != 4 or value == 0 or value & (value - 1):
                h.fail("metadata key 'general.alignment'", "must be a UINT32 power of two")
            alignment = value
    infos, names = [], set()
    for i in range(n_tensors):
        name = h.string(f"tensor name {i}")
        what = f"tensor {name!r}"
        if name in names:
            h.fail(what, "appears twice")
        names.add(name)
        n_dims = h.scalar("<I", what)
        if not 1 <= n_dims <= MAX_DIMS:
            h.fail(what, f"has {n_dims} dims (1 to {MAX_DIMS})")
        dims = [h.scalar("<Q", what) for _ in range(n_dims)]
        type_id = h.scalar("<I", what)
        try:
            ggml_type = gguf.GGMLQuantizationType(type_id)
        except ValueError:
            h.fail(what, f"unknown ggml type {type_id}")
        offset = h.scalar("<Q", what)
        infos.append((what, dims, ggml_type, offset))
    data_start = _align(h.pos, alignment)
    expected, before = 0, "the start of the data"
    for what, dims, ggml_type, offset in infos:
        block, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
        if dims[0] % block:
            h.fail(what, f"its first dim {dims[0]} is not a multiple of the {ggml_type.name} "
                         f"block of {block}")
        elements = 1
        for n in dims:
            elements *= n
        if elements >= 2**63:
            h.fail(what, f"dims {dims} hold more elements than a file can")
        nbytes = elements // block * type_size
        if offset != expected:
            h.fail(what, f"its data offset is {offset}, expected {expected}: right after "
                         f"{before}, aligned to {alignment} bytes")
        end = data_start + offset + nbytes
        if end > len(h.data):
            h.fail(what, f"its data ends at byte {end} but the file has {len(h.data)} bytes "
                         f"(truncated: an interrupted download?)")
        expected = _align(offset + nbytes, alignment)
        before = f"{what} ({ggml_type.name} {dims})"


def _align(n, alignment):
    return n + (-n % alignment)
