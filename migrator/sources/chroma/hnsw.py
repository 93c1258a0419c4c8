"""Read one persisted HNSW vector segment of Chroma's hnswlib fork, exactly as chromadb does.

A segment directory holds ``header.bin`` (the fork's persisted header: a version int, then
hnswlib's usual fields), ``data_level0.bin`` (one fixed-size record per element: level-0 link
list whose third byte carries DELETE_MARK, the float32 vector, the u64 label), ``length.bin``
(one float32 norm per element) and ``index_metadata.pickle`` (Chroma's id <-> label maps).

chromadb's ``getDataByLabel`` looks the label up (the last element carrying it wins, as in
hnswlib's load), refuses deleted elements, and for cosine collections (``normalize_``) returns
``stored[i] * length`` computed in float32; this module does the same multiply in numpy float32,
which IEEE-754 rounds identically.  Anything unexpected raises :class:`HnswRefused`.
"""

from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np

PICKLE_FILE = "index_metadata.pickle"
_HEADER = struct.Struct("<iQQQQQQiIQQQdQ")  # 100 bytes, see loadPersistedIndex in chroma-hnswlib
_PERSISTENCE_VERSION = 1
_DELETE_MARK = 0x01
_LABEL_BYTES = 8


class HnswRefused(Exception):
    """The segment is not in a form this reader reproduces exactly (the message says why)."""


class _NoClassUnpickler(pickle.Unpickler):
    """Unpickler for plain builtin containers only: any class reference is refused."""

    def find_class(self, module: str, name: str) -> type:
        raise HnswRefused(f"{PICKLE_FILE} references class {module}.{name}")


def load_id_to_label(folder: str) -> dict[str, int]:
    """Return the pickle's ``id_to_label`` map after checking it is Chroma's Rust id map."""
    try:
        with open(os.path.join(folder, PICKLE_FILE), "rb") as f:
            data = _NoClassUnpickler(f).load()
    except HnswRefused:
        raise
    except Exception as exc:  # truncated or garbled pickle
        raise HnswRefused(f"unreadable {PICKLE_FILE}: {exc!r}") from None
    if not isinstance(data, dict) or data.get("max_seq_id") is not None:
        raise HnswRefused(f"{PICKLE_FILE} is not a current Chroma id map (legacy max_seq_id?)")
    id_to_label, label_to_id = data.get("id_to_label"), data.get("label_to_id")
    if not isinstance(id_to_label, dict) or not isinstance(label_to_id, dict):
        raise HnswRefused(f"{PICKLE_FILE} lacks id_to_label / label_to_id")
    if len(id_to_label) != len(label_to_id) or any(
        type(k) is not str or type(v) is not int or label_to_id.get(v) != k
        for k, v in id_to_label.items()
    ):
        raise HnswRefused(f"{PICKLE_FILE}: id_to_label and label_to_id disagree")
    return id_to_label


@dataclass(frozen=True)
class HnswHeader:
    """The persisted header fields this reader uses."""

    max_elements: int
    count: int
    size_per_element: int
    label_offset: int
    offset_data: int
    max_m0: int


def read_header(folder: str, dim: int) -> HnswHeader:
    """Parse and validate ``header.bin`` for vectors of ``dim`` float32."""
    try:
        with open(os.path.join(folder, "header.bin"), "rb") as f:
            raw = f.read(_HEADER.size + 1)
    except OSError as exc:
        raise HnswRefused(f"no header.bin: {exc}") from None
    if len(raw) != _HEADER.size:
        raise HnswRefused(f"header.bin is {len(raw)} bytes, expected {_HEADER.size}")
    (version, offset_level0, max_elements, count, size, label_offset, offset_data,
     _maxlevel, _enter, _max_m, max_m0, _m, _mult, _efc) = _HEADER.unpack(raw)
    header = HnswHeader(max_elements, count, size, label_offset, offset_data, max_m0)
    expected_offset_data = max_m0 * 4 + 4
    if (version != _PERSISTENCE_VERSION or offset_level0 != 0 or count > max_elements
            or max_m0 >= 1 << 16 or offset_data != expected_offset_data
            or label_offset != offset_data + 4 * dim or size != label_offset + _LABEL_BYTES):
        raise HnswRefused(f"unexpected HNSW header {header} for dimension {dim}")
    return header


def _file_at_least(path: str, size: int) -> None:
    try:
        actual = os.path.getsize(path)
    except OSError as exc:
        raise HnswRefused(f"missing {os.path.basename(path)}: {exc}") from None
    if actual < size:
        raise HnswRefused(f"{os.path.basename(path)} is {actual} bytes, needs {size} (truncated)")


class HnswSegment:
    """Memory-mapped, read-only view of one persisted HNSW segment."""

    def __init__(self, folder: str, dim: int, normalized: bool) -> None:
        self.dim = dim
        self.normalized = normalized
        self.header = h = read_header(folder, dim)
        level0, length = os.path.join(folder, "data_level0.bin"), os.path.join(folder, "length.bin")
        _file_at_least(level0, h.count * h.size_per_element)
        _file_at_least(length, h.count * 4)
        if h.count:
            self._level0 = np.memmap(level0, dtype=np.uint8, mode="r",
                                     shape=(h.count, h.size_per_element))
            self._lengths = np.memmap(length, dtype="<f4", mode="r", shape=(h.count,))
        else:
            self._level0 = np.zeros((0, h.size_per_element), dtype=np.uint8)
            self._lengths = np.zeros(0, dtype="<f4")
        self._label_row = self._label_lookup()

    def _label_lookup(self) -> np.ndarray:
        """label -> row of the live element carrying it (-1: none, or it is deleted)."""
        h = self.header
        labels = np.ascontiguousarray(
            self._level0[:, h.label_offset:h.label_offset + _LABEL_BYTES]).view("<u8").ravel()
        if labels.size and int(labels.max()) >= 1 << 32:
            raise HnswRefused("label out of range in data_level0.bin")
        lookup = np.full(int(labels.max()) + 1 if labels.size else 1, -1, dtype=np.int64)
        np.maximum.at(lookup, labels.astype(np.int64), np.arange(labels.size, dtype=np.int64))
        deleted = (self._level0[:, 2] & _DELETE_MARK).astype(bool)
        live = lookup >= 0
        lookup[live] = np.where(deleted[lookup[live]], -1, lookup[live])
        return lookup

    def rows_for(self, labels: np.ndarray) -> np.ndarray:
        """Rows of the live elements for ``labels`` (-1 where chromadb would not find one)."""
        labels = np.asarray(labels, dtype=np.int64)
        inside = (labels >= 0) & (labels < self._label_row.size)
        rows = np.full(labels.shape, -1, dtype=np.int64)
        rows[inside] = self._label_row[labels[inside]]
        return rows

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), dim) vectors as chromadb returns them for live ``rows``."""
        h = self.header
        block = self._level0[rows, h.offset_data:h.label_offset]
        vecs = np.ascontiguousarray(block).view("<f4").astype(np.float32, copy=False)
        if self.normalized:
            vecs = vecs * np.asarray(self._lengths[rows], dtype=np.float32)[:, None]
        return vecs
