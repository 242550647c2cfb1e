"""Reading and writing safetensors files with the `safetensors` library (NumPy API).

The library checks the file's structure: the header length, the JSON and its types, that the
tensors' byte ranges tile the data exactly (no overlap, gap, negative or shifted offset, nothing
left over or missing, so a truncated download is caught), each range against its dtype and shape.
This module adds what the library leaves to its callers: errors that name the file and the
tensor, and the storage dtype each tensor may have (an F32 tensor relabelled I32 passes the
library's checks). bf16 comes from `ml_dtypes` and is widened to float32 (exact).

Memory. A tensor of a dtype NumPy holds (F32, BF16, F16, U8) is read straight from the file
into a NumPy array of its shape, at the byte range the library has checked: one copy, into
NumPy's memory, which asks Linux for transparent huge pages for arrays of 4 MB and more. The
library's own buffers get none: the Numba matvec over the 178 MB output head of Gemma 3 270M
took 15.2–16.2 ms on them against 10.8–12.3 (median of 20 calls, three processes each). Other
dtypes come through `safe_open(..., backend="pread")`. The library gives no zero-copy view (its mmap
backend copies too, and keeps the mapped pages resident until the file is closed). A reader
reads tensor by tensor, so a load costs the tensors it keeps, and nothing beyond one tensor in
transit.

The library serialises from tensors already in memory. `write_safetensors` produces one tensor
at a time into a scratch file beside the output, maps that scratch file, and has the library
serialise from the mapping: peak memory stays one tensor, at the price of writing the data twice.
"""
import json
import os

import ml_dtypes
import numpy as np
import safetensors

from minigemma.formats.files import regular_file

FLOAT_DTYPES = ("F32", "F16", "BF16")  # read back as float32, exactly
# safetensors dtype code -> NumPy dtype, for what minigemma writes
NUMPY_DTYPES = {"F32": np.dtype(np.float32), "BF16": np.dtype(ml_dtypes.bfloat16),
                "F16": np.dtype(np.float16), "U8": np.dtype(np.uint8)}


class SafetensorsFile:
    """One .safetensors file opened for reading: names, shapes, dtypes, tensors on demand."""

    def __init__(self, path, what="safetensors file"):
        self.path = regular_file(path, what)
        try:
            self._file = safetensors.safe_open(self.path, framework="np", backend="pread")
            self.metadata = dict(self._file.metadata() or {})
            self._slices = {name: self._file.get_slice(name) for name in self._file.keys()}
        except safetensors.SafetensorError as e:
            raise ValueError(f"{self.path}: not a valid safetensors file, or truncated "
                             f"(safetensors: {e}){_suspects(self.path)}") from None
        self._header, self._data_start = _read_header(self.path)

    def names(self):
        return list(self._slices)

    def shape(self, name):
        return tuple(self._slices[name].get_shape())

    def dtype(self, name):
        """The tensor's storage dtype, as the file names it ("F32", "BF16", "U8", …)."""
        return self._slices[name].get_dtype()

    def read(self, name, dtypes=FLOAT_DTYPES):
        """The tensor `name` as a NumPy array: float32 for the float dtypes, as stored otherwise.
        ValueError naming the file and tensor when its storage dtype is not one of `dtypes`."""
        stored = self.dtype(name)
        if stored not in dtypes:
            raise ValueError(f"{self.path}: tensor {name!r} is stored as {stored}; it must be "
                             f"one of {', '.join(dtypes)}")
        try:
            if stored in NUMPY_DTYPES:
                array = self._read_bytes(name, NUMPY_DTYPES[stored])
            else:
                array = self._file.get_tensor(name)
        except (safetensors.SafetensorError, OSError) as e:
            raise ValueError(f"{self.path}: cannot read tensor {name!r} ({e})") from None
        if stored in FLOAT_DTYPES:
            return array.astype(np.float32, copy=False)
        return array


    def _read_bytes(self, name, dtype):
        """The tensor's bytes read into a new NumPy array of its shape (module docstring)."""
        begin, end = self._header[name]["data_offsets"]
        array = np.empty(self.shape(name), dtype)
        with open(self.path, "rb") as f:
            f.seek(self._data_start + begin)
            got = f.readinto(array.reshape(-1).view(np.uint8)) if array.size else 0
        if got != end - begin:
            raise OSError(f"{end - begin} bytes expected, {got} read: the file changed or was "
                          "cut short after it was opened")
        return array


ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
              "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _suspects(path):
    """For a message only, after the library has refused the file: the entries of its header
    whose byte range does not fit their dtype and shape ("" when the header cannot be read or
    no entry looks wrong)."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(min(int.from_bytes(f.read(8), "little"), 2**26)))
        wrong = []
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            size = ITEM_BYTES[entry["dtype"]]
            for n in entry["shape"]:
                size *= n
            if end - begin != size or begin < 0:
                wrong.append(name)
    except Exception:  # a header the library refused may be anything: name nothing then
        return ""
    return f"; tensors whose bytes do not fit their dtype and shape: {wrong[:5]}" if wrong else ""


def _read_header(path):
    """The header's entries by name and the byte offset where the data starts. ValueError when
    the header names a tensor (or a field of one) twice: the library keeps the last entry; two
    entries for one name make the file ambiguous, so it is refused. The library has checked the
    header's length and JSON, so reading it here cannot fail."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = f.read(length)

    def unique(pairs):
        d = dict(pairs)
        if len(d) < len(pairs):
            seen = set()
            twice = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise ValueError(f"{path}: the safetensors header names {twice!r} twice")
        return d
    return json.loads(header, object_pairs_hook=unique), 8 + length


def write_safetensors(path, tensors, metadata=None):
    """Write tensors to `path`, producing one at a time (see the module docstring).

    `tensors` is a list of (name, shape, dtype, produce): dtype a safetensors code of
    NUMPY_DTYPES, produce() returning an array of `shape` (floats are rounded to the dtype).
    """
    path = os.fspath(path)
    scratch = path + ".scratch"
    layout = []  # (name, dtype, shape, byte offset in the scratch file)
    offset = 0
    try:
        with open(scratch, "wb") as f:
            for name, shape, dtype, produce in tensors:
                array = np.ascontiguousarray(produce(), dtype=NUMPY_DTYPES[dtype])
                if tuple(array.shape) != tuple(shape):
                    raise ValueError(f"tensor {name!r}: produced shape {array.shape}, declared "
                                     f"{tuple(shape)}")
                f.write(array.view(np.uint8).data if array.size else b"")
                layout.append((name, array.dtype, array.shape, offset))
                offset += array.nbytes
                del array
        staged = np.memmap(scratch, dtype=np.uint8, mode="r") if offset else np.zeros(1, np.uint8)
        specs = {}
        for name, dtype, shape, start in layout:
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            specs[name] = safetensors.TensorSpec(
                dtype=dtype.name, shape=list(shape),
                data_ptr=staged.ctypes.data + (start if nbytes else 0), data_len=nbytes)
        safetensors.serialize_file(specs, path, metadata={k: str(v) for k, v in
                                                          (metadata or {}).items()} or None)
        del staged
        os.chmod(path, 0o666 & ~_umask())  # the library creates the file private (0600)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
