"""Column-at-a-time fast path for conversion: prove a whole column of a batch needs no per-value work, in C-speed
passes (type sets, one join, one regex), and hand it through untouched; only columns that fail the proof (NUL, a
suspicious escape, an unexpected type, ...) go through the per-value converters, and only in that batch.

The proofs are conservative: a column passes only when every per-value converter would return its value unchanged
and record nothing, so the fast path never changes a result — it only skips work.
"""

from __future__ import annotations

from itertools import filterfalse, repeat
from operator import contains
from typing import Callable, Sequence

from migrator.convert.policies import INT_RANGE, VARCHAR, kind_of
from migrator.convert.values import SURROGATE_ESCAPED, SUSPECT_ESCAPE  # one definition: both paths must agree

NoneType = type(None)
SEPARATOR = "\x01"  # joins short values for one search (see _haystacks)
JOIN_CHARS = 1 << 20
_BOOL = {0: False, 1: True, None: None}

Proof = Callable[[Sequence, bool], "list | Sequence | None"]


def proof_for(pg_type: str, nullable: bool) -> Proof | None:
    """The fast check for one target column type, or None when the kind always takes the per-value path."""
    kind = kind_of(pg_type)
    if kind == "text":
        m = VARCHAR.match(pg_type.lower())
        base = _text(int(m.group(1)) if m and m.group(1) else None)
    elif kind == "json":
        base = _json
    elif kind == "int":
        base = _int(INT_RANGE[pg_type.lower()])
    elif kind == "bool":
        base = _bool
    else:
        return None
    if nullable:
        return base
    return lambda col, lenient: None if None in col else base(col, lenient)


def _present(col: Sequence, types: set) -> list | None:
    """The non-empty values, when every value is str or NULL; None otherwise."""
    if not types <= {str, NoneType}:
        return None
    return list(filter(None, col))


def _haystacks(values: list) -> list:
    """The values as strings to search: short values joined into one (per-value calls cost more than the search:
    0.6 MB of short JSON took 40 ms value by value), long ones as they are (a join copies, and one wide character
    widens the whole copy). The separator is in no pattern searched for, so no match can span two values, and every
    match within a value is still found: a pattern's lookarounds fail on the separator as they do at either end of
    a lone value."""
    if len(values) > 1 and sum(map(len, values)) <= JOIN_CHARS:
        return [SEPARATOR.join(values)]
    return values


def _any_contains(values: list, needle: str) -> bool:
    return any(map(contains, values, repeat(needle)))


def _clean_strings(values: list, lenient: bool) -> bool:
    """No NUL, and (only when the batch was read leniently) no text decoded from invalid UTF-8."""
    if _any_contains(values, "\x00"):
        return False
    return not lenient or not any(map(SURROGATE_ESCAPED.search, filterfalse(str.isascii, values)))


def _text(max_len: int | None) -> Proof:
    def prove(col: Sequence, lenient: bool):
        values = _present(col, set(map(type, col)))
        if values is None or not _clean_strings(_haystacks(values), lenient):
            return None
        if max_len is not None and max(map(len, values), default=0) > max_len:
            return None
        return col

    return prove


def _json(col: Sequence, lenient: bool):
    values = _present(col, set(map(type, col)))
    if values is None:
        return None
    hay = _haystacks(values)
    if not _clean_strings(hay, lenient) or _any_contains(hay, "NaN") or _any_contains(hay, "Infinity"):
        return None
    if any(map(SUSPECT_ESCAPE.search, hay)):
        return None
    return col


def _int(limit: int) -> Proof:
    def prove(col: Sequence, lenient: bool):
        types = set(map(type, col))
        if not types <= {int, NoneType}:
            return None
        values = list(filter(lambda v: v is not None, col)) if NoneType in types else col
        if values and not (-limit <= min(values) and max(values) < limit):
            return None
        return col

    return prove


def _bool(col: Sequence, lenient: bool):
    if not set(map(type, col)) <= {int, bool, NoneType} or not set(col) <= {0, 1, None}:
        return None
    return list(map(_BOOL.__getitem__, col))


class LazyKeys:
    """Row keys computed only when asked for (most batches never need one: no fixup, no quarantine)."""

    def __init__(self, raws: Sequence[tuple], key_of: Callable[[tuple], str]):
        self.raws = raws
        self.key_of = key_of

    def __len__(self) -> int:
        return len(self.raws)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyKeys(self.raws[index], self.key_of)
        return self.key_of(self.raws[index])

    def __iter__(self):
        return map(self.key_of, self.raws)


def convert_batch(conv, raws: list[tuple], out) -> bool:
    """Fill `out` (a rows.Converted) using column proofs; False when the caller must use the per-row path."""
    if not raws or conv.strict_json:
        return False
    cols = list(zip(*raws))
    lenient = getattr(raws, "lenient", True)  # plain lists (no flag): check everything
    outs, slow = [], []
    for j, (proof, i) in enumerate(zip(conv.proofs, conv.picks)):
        col = cols[1 + i]
        res = proof(col, lenient) if proof is not None else None
        if res is None:
            slow.append(j)
            outs.append(col)
        else:
            outs.append(res)
    rows = list(zip(*outs)) if outs else [() for _ in raws]
    if not slow:
        out.rows, out.raws, out.keys = rows, raws, LazyKeys(raws, conv.key_of)
        return True
    _slow_columns(conv, raws, rows, slow, out)
    return True


def _slow_columns(conv, raws, rows, slow: list[int], out) -> None:
    from migrator.convert import policies as convert
    from migrator.convert.keys import dumps

    ctx = convert.Context(conv.actions)
    kept_rows, kept_raws = [], []
    for raw, row in zip(raws, rows):
        mark = len(ctx.fixups)
        try:
            values = None
            for j in slow:
                value = conv.convs[j](row[j], ctx)
                if value is not row[j]:
                    values = values or list(row)
                    values[j] = value
        except convert.RowRejected as rej:
            del ctx.fixups[mark:]
            out.quarantine.append((conv.key_of(raw), rej.reason, rej.policy, rej.column, conv.row_json(raw)))
            continue
        kept_rows.append(tuple(values) if values else row)
        kept_raws.append(raw)
        if len(ctx.fixups) > mark:
            key = conv.key_of(raw)
            out.fixups += [(key, f.column, f.policy, f.action, dumps(f.original)) for f in ctx.fixups[mark:]]
    out.rows, out.raws, out.keys = kept_rows, kept_raws, LazyKeys(kept_raws, conv.key_of)
