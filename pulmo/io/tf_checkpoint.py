"""Read TensorFlow 1.x checkpoints (TensorBundle V2) without TensorFlow.

A checkpoint ``PREFIX`` is two or more files:

``PREFIX.index``
    An SSTable (LevelDB table format): data blocks of prefix-compressed key/value
    entries, a meta-index block, an index block and a 48-byte footer ending in the
    magic number ``0xdb4775248b80fb57``. Every block is followed by a 5-byte trailer
    (compression type, masked CRC32C). The key ``""`` holds a ``BundleHeaderProto``;
    every other key is a tensor name whose value is a ``BundleEntryProto``
    (dtype, shape, shard_id, offset, size, crc32c).
``PREFIX.data-SSSSS-of-NNNNN``
    The raw little-endian tensor bytes, addressed by (shard_id, offset, size); ``crc32c`` is masked as in LevelDB.

Only what is needed to read dense numeric tensors is implemented: uncompressed
blocks (TensorBundle never compresses them), the dtypes below, and CRC32C checks
on both the table blocks and each tensor's bytes, so a corrupt file is reported
rather than silently read. Sliced (partitioned) variables are refused.

References: tensorflow/core/util/tensor_bundle/tensor_bundle.{h,cc},
tensorflow/core/protobuf/tensor_bundle.proto, leveldb/doc/table_format.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pulmo.errors import ModelError

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER_LEN = 5

# tensorflow/core/framework/types.proto DataType -> numpy dtype (little endian)
_DTYPES = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
}


# --- CRC32C (Castagnoli), as used by LevelDB tables and TensorBundle ---------------

def _crc32c_table() -> np.ndarray:
    poly = 0x82F63B78
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc32c_table().tolist()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data`` (unmasked)."""
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --- protobuf wire format, just enough for BundleEntryProto -----------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) for a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = buf[pos : pos + 8]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value = buf[pos : pos + n]
            pos += n
        elif wire == 5:
            value = buf[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        yield number, wire, value


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives in the data shards (``BundleEntryProto``)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool


def _parse_entry(name: str, value: bytes) -> BundleEntry:
    dtype = shard = offset = size = 0
    crc = None
    shape: list[int] = []
    sliced = False
    for number, _, v in _fields(value):
        if number == 1:
            dtype = v
        elif number == 2:  # TensorShapeProto
            for n2, _, dim in _fields(v):
                if n2 == 2:  # Dim
                    dim_size = 0
                    for n3, _, dv in _fields(dim):
                        if n3 == 1:
                            dim_size = dv
                    shape.append(dim_size)
        elif number == 3:
            shard = v
        elif number == 4:
            offset = v
        elif number == 5:
            size = v
        elif number == 6:
            crc = struct.unpack("<I", v)[0]
        elif number == 7:
            sliced = True
    return BundleEntry(name, dtype, tuple(shape), shard, offset, size, crc, sliced)


# --- SSTable -----------------------------------------------------------------------

def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size
    if end + _BLOCK_TRAILER_LEN > len(data):
        raise ValueError("block extends past the end of the file")
    block = data[offset:end]
    ctype = data[end]
    if ctype != 0:
        raise ValueError(f"compressed table blocks (type {ctype}) are not supported")
    stored = struct.unpack("<I", data[end + 1 : end + 5])[0]
    if crc32c(data[offset : end + 1]) != _unmask_crc(stored):
        raise ValueError("table block checksum mismatch")
    return block


def _block_entries(block: bytes):
    if len(block) < 4:
        raise ValueError("block too short")
    num_restarts = struct.unpack("<I", block[-4:])[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise ValueError("bad restart array")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise ValueError("corrupt block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + vlen]
        pos += vlen


def read_index(index_path: str | Path) -> dict[str, BundleEntry]:
    """Parse a ``.index`` file into {tensor name: BundleEntry}."""
    data = Path(index_path).read_bytes()
    if len(data) < _FOOTER_LEN:
        raise ValueError("file too short to be a TensorBundle index")
    footer = data[-_FOOTER_LEN:]
    if struct.unpack("<Q", footer[-8:])[0] != _TABLE_MAGIC:
        raise ValueError("not a TensorBundle index (bad table magic number)")
    _, _, pos = _block_handle(footer, 0)  # meta-index handle: unused
    idx_off, idx_size, _ = _block_handle(footer, pos)
    entries: dict[str, BundleEntry] = {}
    for _, handle in _block_entries(_read_block(data, idx_off, idx_size)):
        off, size, _ = _block_handle(handle, 0)
        for key, value in _block_entries(_read_block(data, off, size)):
            if key == b"":
                continue  # BundleHeaderProto
            name = key.decode("utf-8")
            entries[name] = _parse_entry(name, value)
    return entries


class Checkpoint:
    """A TensorFlow 1.x checkpoint opened for reading.

    >>> ckpt = Checkpoint("models/fold_0/model")      # the common prefix
    >>> ckpt.names()                                   # tensor names
    >>> w = ckpt.tensor("layer1/weights")              # numpy array, checkpoint dtype
    """

    def __init__(self, prefix: str | Path):
        prefix = Path(prefix)
        index = prefix.with_name(prefix.name + ".index")
        if not index.exists():
            raise ModelError(f"{index}: checkpoint index file not found.")
        try:
            self.entries = read_index(index)
        except (ValueError, UnicodeDecodeError, struct.error) as exc:
            raise ModelError(f"{index}: corrupt or unsupported checkpoint index ({exc}).") from None
        self.prefix = prefix
        self._shards: dict[int, bytes] = {}

    def names(self) -> list[str]:
        return sorted(self.entries)

    def _shard(self, shard_id: int) -> bytes:
        if shard_id not in self._shards:
            candidates = sorted(self.prefix.parent.glob(f"{self.prefix.name}.data-{shard_id:05d}-of-*"))
            if not candidates:
                raise ModelError(f"{self.prefix}: data shard {shard_id} of the checkpoint is missing.")
            self._shards[shard_id] = candidates[0].read_bytes()
        return self._shards[shard_id]

    def tensor(self, name: str) -> np.ndarray:
        """The named tensor as a numpy array (a copy), with its checksum verified."""
        if name not in self.entries:
            raise ModelError(f"{self.prefix}: the checkpoint has no tensor named {name!r}.")
        e = self.entries[name]
        if e.sliced:
            raise ModelError(f"{self.prefix}: tensor {name!r} is partitioned; not supported.")
        if e.dtype not in _DTYPES:
            raise ModelError(f"{self.prefix}: tensor {name!r} has unsupported dtype code {e.dtype}.")
        dtype = _DTYPES[e.dtype]
        raw = self._shard(e.shard_id)[e.offset : e.offset + e.size]
        expected = int(np.prod(e.shape, dtype=np.int64)) * dtype.itemsize
        if len(raw) != e.size or e.size != expected:
            raise ModelError(f"{self.prefix}: tensor {name!r} is truncated in the data file.")
        if e.crc32c is not None and crc32c(raw) != _unmask_crc(e.crc32c):
            raise ModelError(f"{self.prefix}: tensor {name!r} fails its checksum: the data file is corrupt.")
        return np.frombuffer(raw, dtype=dtype).reshape(e.shape).copy()
