"""Vectors held in chroma.sqlite3's ``embeddings_queue``, resolved as chromadb 1.5.9's local HNSW segment resolves
them when it opens a collection (Rust ``local_hnsw.rs`` ``apply_log_chunk``, replayed by the local compaction
manager's backfill):

* the rows replayed are the collection's rows with ``seq_id`` above the vector segment's ``max_seq_id``, in
  ``seq_id`` order; all of them when the segment was never persisted (no id map, or an empty one);
* ADD (0) of an id the index holds is ignored; UPDATE (1) of an id it does not hold is ignored, and one without a
  vector leaves the vector alone; UPSERT (2) adds or replaces; DELETE (3) of a held id removes it; a backfill-function
  row (4) is skipped;
* a vector is ``vector`` as little-endian float32 (``encoding`` 'FLOAT32', 4 x dimension bytes); for cosine space
  chromadb hands back hnswlib's round trip of it: ``(v * inv) * length`` with ``length = sqrtf(sum of v[i]^2 summed
  in order)`` and ``inv = 1 / (length + 1e-30)``, all in float32.

Anything else (another encoding or length, an ADD or UPSERT without a vector, an unknown operation) is refused: the
caller reads that collection with chromadb. Which rows belong to a collection comes from one scan of the queue per
store (``QueueIndex``: seq_ids only, 8 bytes a row); rows are then fetched by seq_id, vectors only when read.
"""

from __future__ import annotations

import re
import sqlite3
from array import array
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

ADD, UPDATE, UPSERT, DELETE, BACKFILL_FN = 0, 1, 2, 3, 4
TOPIC = re.compile(r"persistent://[^/]+/[^/]+/([0-9a-f-]{36})")  # a queue row's topic: its collection id
_IN = 900  # seq_ids per IN (...): under SQLite's oldest host parameter limit
_EPS = np.float32(1e-30)


class QueueRefused(Exception):
    """Queue rows this module does not resolve exactly as chromadb does (the message says why)."""


class QueueIndex:
    """The seq_ids of each collection's queue rows, ascending (one scan of the queue, no vector read)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._seqs: dict[str, array] = {}
        for topic, seq in conn.execute("SELECT topic, seq_id FROM embeddings_queue ORDER BY seq_id"):
            m = TOPIC.fullmatch(topic)
            if m is None:
                raise QueueRefused(f"unknown queue topic {topic!r}")
            found = self._seqs.get(m.group(1))
            if found is None:
                found = self._seqs[m.group(1)] = array("q")
            found.append(seq)

    def last(self, collection_id: str) -> int:
        """The collection's newest seq_id in the queue, 0 when it has none."""
        seqs = self._seqs.get(collection_id)
        return seqs[-1] if seqs else 0

    def after(self, collection_id: str, seq_id: int) -> Sequence[int]:
        """The collection's seq_ids above `seq_id`, ascending."""
        seqs = self._seqs.get(collection_id)
        if not seqs:
            return ()
        return seqs[bisect_right(seqs, seq_id):]


def replay(conn: sqlite3.Connection, seqs: Sequence[int], held: dict[str, int] | set[str], dim: int | None
           ) -> dict[str, int | None]:
    """The ids the replay of rows `seqs` changes: id -> seq_id of the row whose vector the id ends with, or None when
    it ends deleted. `held`: the ids the persisted index holds before the replay."""
    changed: dict[str, int | None] = {}
    for seq, op, chunk_id, encoding, nbytes in _rows(conn, seqs):
        present = changed[chunk_id] is not None if chunk_id in changed else chunk_id in held
        has_vector = nbytes is not None
        if has_vector and (encoding != "FLOAT32" or not dim or nbytes != 4 * dim):
            raise QueueRefused(f"queue row {seq}: vector of {nbytes} bytes encoded {encoding!r} (dimension {dim})")
        if op == ADD or op == UPSERT:
            if not has_vector and (op == UPSERT or not present):
                raise QueueRefused(f"queue row {seq}: {'UPSERT' if op == UPSERT else 'ADD'} without a vector")
            if op == UPSERT or not present:
                changed[chunk_id] = seq
        elif op == UPDATE:
            if present and has_vector:
                changed[chunk_id] = seq
        elif op == DELETE:
            if present:
                changed[chunk_id] = None
        elif op != BACKFILL_FN:
            raise QueueRefused(f"queue row {seq}: unknown operation {op!r}")
    return changed


def ids_of(conn: sqlite3.Connection, seqs: Sequence[int]) -> set[str]:
    """The chunk ids rows `seqs` name."""
    return {row[2] for row in _rows(conn, seqs)}


def _rows(conn: sqlite3.Connection, seqs: Sequence[int]):
    """(seq_id, operation, id, encoding, vector's byte length or None) of rows `seqs`, in seq_id order."""
    for part in _parts(seqs):
        yield from conn.execute(
            "SELECT seq_id, operation, id, encoding, length(vector) FROM embeddings_queue "
            f"WHERE seq_id IN ({','.join('?' * len(part))}) ORDER BY seq_id", part)


def vectors(conn: sqlite3.Connection, seqs: Sequence[int], dim: int, *, cosine: bool) -> np.ndarray:
    """The vectors of rows `seqs` (in that order) as chromadb's get returns them: float32, shape (n, dim)."""
    found: dict[int, bytes] = {}
    for part in _parts(sorted(set(seqs))):
        found.update(conn.execute(
            f"SELECT seq_id, vector FROM embeddings_queue WHERE seq_id IN ({','.join('?' * len(part))})", part))
    out = np.frombuffer(b"".join(found[s] for s in seqs), dtype="<f4").reshape(len(seqs), dim).astype(np.float32)
    return hnsw_round_trip(out) if cosine else out


def hnsw_round_trip(v: np.ndarray) -> np.ndarray:
    """What hnswlib's cosine space stores and hands back for rows `v`: normalised by a sequential float32 sum of
    squares, then multiplied by the length it kept (bit for bit, measured against chromadb 1.5.9)."""
    length = np.sqrt(np.cumsum(v * v, axis=1, dtype=np.float32)[:, -1:])
    inv = np.float32(1) / (length + _EPS)
    return (v * inv) * length


def _parts(seqs: Sequence[int]):
    for i in range(0, len(seqs), _IN):
        yield list(seqs[i:i + _IN])
