"""Chroma chunks -> document_chunk's `text` and `vmetadata`, every change a named, counted policy (Context).

A chunk's document becomes `text` and its metadata the JSON text of `vmetadata` (jsonb), carried as they are
except for what PostgreSQL cannot store: a NUL (`nul_in_text`) or a lone UTF-16 surrogate
(`lone_surrogate_in_text`) in the document or in a metadata key or string, and NaN/Infinity in a metadata number
(`json_nan`: JSON has none). Those are stripped (as HridaAI's own client strips them from what it writes:
sanitize_text_for_db, process_metadata) / made null, or the chunk is rejected into quarantine, as `--policy`
says. Each policy fires at most once per chunk and column, with the whole document / metadata as its
original, as a table row's json column records it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable

from migrator.convert.keys import dumps
from migrator.convert.policies import POLICIES, Context, RowRejected, preview

TEXT, METADATA = "text", "vmetadata"
NUL, SURROGATE, NAN = "nul_in_text", "lone_surrogate_in_text", "json_nan"
CHUNK_POLICIES = (NUL, SURROGATE, NAN)
# The one action of each chunk policy that keeps the chunk: a chunk that was loaded went through exactly these,
# whatever --policy said (the other action is reject), so verify can recompute it without the run's actions.
KEEP = {p: next(a for a in POLICIES[p][1] if a != "reject") for p in CHUNK_POLICIES}

_SURROGATE = re.compile("[\ud800-\udfff]")


class ChunkConverter:
    """One batch of chunks: their text and vmetadata under the run's `actions` (plan.policies), the quarantine rows
    (key, reason, policy, column, chunk_json) and the fixups (key, column, policy, action, original_json)."""

    def __init__(self, actions: dict[str, str]) -> None:
        self.actions = actions
        self.quarantine: list[tuple] = []
        self.fixups: list[tuple] = []

    def values(self, chunk) -> tuple[str | None, str | None] | None:
        """(text, vmetadata) of `chunk`, its fixups recorded; None when a policy rejects it (it is quarantined)."""
        ctx = Context(self.actions)
        try:
            out = text(chunk.document, ctx), vmetadata(chunk.metadata, ctx)
        except RowRejected as rej:
            self.reject(chunk, rej.reason, rej.policy, rej.column)
            return None
        if ctx.fixups:
            key = key_of(chunk)
            self.fixups += [(key, f.column, f.policy, f.action, dumps(f.original)) for f in ctx.fixups]
        return out

    def reject(self, chunk, reason: str, policy: str, column: str) -> None:
        """Quarantine `chunk`, also for what the load finds itself (an id collision, a lost or unstorable vector)."""
        self.quarantine.append((key_of(chunk), reason, policy, column, chunk_json(chunk)))


def loaded_values(chunk) -> tuple[str | None, str | None]:
    """(text, vmetadata) that document_chunk holds for a chunk the load did not quarantine (see KEEP)."""
    ctx = Context(KEEP)
    return text(chunk.document, ctx), vmetadata(chunk.metadata, ctx)


def text(document: str | None, ctx: Context) -> str | None:
    """The document as `text`: NUL and lone surrogates removed under their policies."""
    if document is None:
        return None
    cleaned, fired = _scrub(document)
    for policy in fired:
        ctx.apply(TEXT, policy, document)
    return cleaned


def vmetadata(metadata: dict[str, Any] | None, ctx: Context) -> str | None:
    """The metadata as JSON text for the jsonb `vmetadata`: keys and strings scrubbed, NaN/Infinity null.

    A key that would become another key of the chunk once scrubbed rejects the chunk (one value would be lost)."""
    if metadata is None:
        return None
    if all(type(k) is str for k in metadata):  # the common case, one C pass: what the loop below gives unchanged
        try:
            out_text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
        except ValueError:  # NaN/Infinity: their policy, below
            pass
        else:  # a NUL is escaped as \u0000 (an escaped backslash before "u0000" only sends it the long way)
            if "\\u0000" not in out_text and (out_text.isascii() or _SURROGATE.search(out_text) is None):
                return out_text
    return _vmetadata_each(metadata, ctx)


def _vmetadata_each(metadata: dict[str, Any], ctx: Context) -> str:
    """vmetadata, key by key and value by value."""
    fired: set[str] = set()

    def fire(policy: str) -> None:
        if policy not in fired:
            ctx.apply(METADATA, policy, metadata)
            fired.add(policy)

    out: dict[str, Any] = {}
    for key, value in metadata.items():
        key = str(key)
        new_key, changed = _scrub(key)
        for policy in changed:
            fire(policy)
        if changed and (new_key in metadata or new_key in out):
            raise RowRejected(METADATA, changed[0], f"metadata key {preview(key)} would become the key "
                                                    f"{preview(new_key)} the chunk already has ({changed[0]})")
        out[new_key] = _json_value(value, fire)
    return json.dumps(out, ensure_ascii=False, allow_nan=False)


def _scrub(value: str) -> tuple[str, tuple[str, ...]]:
    """`value` without NUL and lone surrogates, and the policies that removed something (none: the same str)."""
    if "\x00" not in value and (value.isascii() or _SURROGATE.search(value) is None):
        return value, ()  # the common case: one C scan, no copy
    fired: tuple[str, ...] = ()
    if "\x00" in value:
        value, fired = value.replace("\x00", ""), (NUL,)
    if _SURROGATE.search(value) is not None:
        value, fired = _SURROGATE.sub("", value), fired + (SURROGATE,)
    return value, fired


def _json_value(value: Any, fire: Callable[[str], None]) -> Any:
    """A metadata value (Chroma: str, int, float, bool; lists in newer stores) as JSON can hold it."""
    if isinstance(value, str):
        cleaned, changed = _scrub(value)
        for policy in changed:
            fire(policy)
        return cleaned
    if isinstance(value, float) and not math.isfinite(value):
        fire(NAN)
        return None
    if isinstance(value, (list, tuple)):
        return [_json_value(v, fire) for v in value]
    return value


def key_of(chunk) -> str:
    """The chunk's key in the ledger and the reports: `["<chunk id>"]`."""
    return dumps([chunk.id])


def chunk_json(chunk) -> str:
    """The full chunk as ASCII JSON (for the quarantine table)."""
    embedding = None if chunk.embedding is None else [float(x) for x in chunk.embedding]
    return dumps({"id": chunk.id, "document": chunk.document, "metadata": chunk.metadata, "embedding": embedding})
