"""What changed in the Chroma store between two snapshots: collections added and removed (HridaAI deletes a file's
collection with the file), and in the collections both hold, chunks added, changed and removed.

A collection whose (id, metadata segment max_seq_id) is the same in both snapshots was not written in between and
is not read at all (collections.versions says why that is sound). The others are read in full through the direct
reader on both sides and compared chunk by chunk: vector bytes, document, metadata with its value types.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from migrator.sources.chroma import collections as chroma_catalog
from migrator.sources.chroma.client import Chunk
from migrator.sources.chroma.direct import DirectStore

BATCH = 1000


class Unreadable(Exception):
    """A collection the direct reader refuses on one side (the message names it): its delta is not certain."""


@dataclass
class CollectionDelta:
    """Chunk ids added (or whose content changed) and removed in one collection."""

    name: str
    upserted: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


@dataclass
class StoreDelta:
    """The whole store's changes."""

    added: list[str] = field(default_factory=list)  # collections only in the new snapshot
    removed: list[str] = field(default_factory=list)  # collections only in the old one
    changed: list[CollectionDelta] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)  # not written in between: not read


def store_delta(old: DirectStore, new: DirectStore) -> StoreDelta:
    """The delta from store snapshot `old` to `new`. Raises Unreadable for a written collection the direct reader
    refuses on either side."""
    before, after = chroma_catalog.versions(old), chroma_catalog.versions(new)
    out = StoreDelta(added=sorted(set(after) - set(before)), removed=sorted(set(before) - set(after)))
    for name in sorted(set(before) & set(after)):
        if before[name] == after[name]:
            out.untouched.append(name)
        elif before[name][0] != after[name][0]:  # deleted and made again under the same name
            out.removed.append(name)
            out.added.append(name)
        else:
            out.changed.append(collection_delta(old, new, name))
    out.added.sort()
    out.removed.sort()
    return out


def collection_delta(old: DirectStore, new: DirectStore, name: str) -> CollectionDelta:
    """Chunk by chunk: ids only in `new` or with another content are upserted, ids only in `old` removed."""
    mine = _digests(old, name)
    out = CollectionDelta(name)
    seen = set()
    for chunk_id, digest in _iter_digests(new, name):
        seen.add(chunk_id)
        if mine.get(chunk_id) == digest:
            out.unchanged += 1
        else:
            out.upserted.append(chunk_id)
    out.removed = sorted(set(mine) - seen)
    return out


def _digests(store: DirectStore, name: str) -> dict[str, bytes]:
    return dict(_iter_digests(store, name))


def _iter_digests(store: DirectStore, name: str):
    reader = store.reader(name)
    if reader is None:
        raise Unreadable(f"collection {name}: the direct reader refuses it (see the log); its changes are not certain")
    for batch in reader.iter_batches(batch_size=BATCH):
        for chunk in batch.chunks:
            yield chunk.id, chunk_digest(chunk)


def chunk_digest(chunk: Chunk) -> bytes:
    """A digest of what a chunk carries into document_chunk: vector bytes, document, metadata with value types."""
    h = hashlib.blake2b(digest_size=16)
    h.update(b"-" if chunk.embedding is None else chunk.embedding.tobytes())
    h.update(b"\0" + (b"-" if chunk.document is None else b"+" + chunk.document.encode("utf-8", "surrogatepass")))
    meta = chunk.metadata or {}
    h.update(b"\0" + repr(sorted((k, type(v).__name__, repr(v)) for k, v in meta.items())).encode(
        "utf-8", "surrogatepass") if chunk.metadata is not None else b"\0-")
    return h.digest()
