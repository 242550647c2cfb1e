"""Reading and writing safetensors files, tensor by tensor.

The format: an 8-byte little-endian header length n, n bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the raw
little-endian data, offsets counted from the end of the header. We read through a memory map,
so a tensor is paged in only when it is converted, and check every offset against the file size
so a truncated download is named as such instead of failing somewhere inside NumPy. bf16 tensors
come back as float32 (exact).
"""
import json
import math
import os
import struct

import numpy as np

from minigemma.ops.bfloat16 import bf16_bits_to_f32, f32_to_bf16_bits

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsFile:
    """One .safetensors file opened for reading: names, shapes, dtypes, tensors on demand."""

    def __init__(self, path):
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ValueError(f"{self.path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise ValueError(f"{self.path}: truncated or not a safetensors file (header of "
                                 f"{n} bytes, file of {size} bytes)")
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise ValueError(f"{self.path}: corrupt safetensors header ({e})") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self.entries = header
        self.data_start = 8 + n
        for name, entry in header.items():
            self._check_entry(name, entry, size)

    def _check_entry(self, name, entry, size):
        if entry.get("dtype") not in DTYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype "
                             f"{entry.get('dtype')!r}")
        begin, end = entry["data_offsets"]
        expected = math.prod(entry["shape"]) * np.dtype(DTYPES[entry["dtype"]]).itemsize
        if end - begin != expected:
            raise ValueError(f"{self.path}: tensor {name!r} has {end - begin} bytes, shape "
                             f"{entry['shape']} {entry['dtype']} needs {expected}")
        if self.data_start + end > size:
            raise ValueError(f"{self.path}: file is truncated: tensor {name!r} ends at byte "
                             f"{self.data_start + end} but the file has {size} bytes")

    def names(self):
        return list(self.entries)

    def shape(self, name):
        return tuple(self.entries[name]["shape"])

    def dtype(self, name):
        return self.entries[name]["dtype"]

    def read(self, name, upcast_bf16=True):
        """The tensor `name` as a NumPy array (bf16 -> float32 unless upcast_bf16=False)."""
        entry = self.entries[name]
        begin, end = entry["data_offsets"]
        dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")
        if end == begin:
            array = np.zeros(entry["shape"], dtype=dtype)
        else:
            array = np.memmap(self.path, dtype=dtype, mode="r", offset=self.data_start + begin,
                              shape=tuple(entry["shape"]))
        if entry["dtype"] == "BF16" and upcast_bf16:
            return bf16_bits_to_f32(array)
        return np.asarray(array)


def _encode(array, dtype):
    """(safetensors dtype name, bytes-ready array) for writing `array` as `dtype`."""
    if dtype == "BF16":
        return f32_to_bf16_bits(array)
    return np.ascontiguousarray(array, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"))


def write_safetensors(path, tensors, metadata=None):
    """Write tensors to `path`, one at a time.

    `tensors` is a list of (name, shape, dtype, produce) where produce() returns the array; the
    header is written first from the shapes, then each array is produced, written and dropped,
    so peak memory is one tensor beyond what the caller holds.
    """
    header, offset = {}, 0
    for name, shape, dtype, _ in tensors:
        nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype, produce in tensors:
            array = _encode(produce(), dtype)
            if tuple(array.shape) != tuple(shape):
                raise ValueError(f"tensor {name!r}: produced shape {array.shape}, declared {shape}")
            array.tofile(f)
