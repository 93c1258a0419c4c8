"""The per-kind converters behind convert.converter_for (split out to keep each module small).

Each converter takes (value, ctx) and returns what asyncpg's binary COPY expects for the target type:
str for text and json (json travels as its text, never decoded on the fast path), bool, int, date, datetime.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

from migrator.convert import Context, Converter, canonical_json_number, parse_timestamp

_SURROGATE_ESCAPED = re.compile("[\udc80-\udcff]")
# a \u escape that is NUL or a surrogate; may false-positive on an escaped backslash, never false-negative
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_ESCAPES = re.compile(r"\\\\|\\u([0-9a-fA-F]{4})")
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def clean_text(column: str, value: str, ctx: Context) -> str:
    """Apply the invalid-UTF-8 and NUL policies to one str."""
    if _SURROGATE_ESCAPED.search(value) and not value.isascii():
        ctx.apply(column, "invalid_utf8", value.encode("utf-8", "surrogateescape"))
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "\x00" in value:
        ctx.apply(column, "nul_in_text", value)
        value = value.replace("\x00", "")
    return value


def _as_text(column: str, value: Any, ctx: Context) -> str | None:
    """Any SQLite value as str (numbers as their text, blobs decoded), or None."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def text_converter(column: str, max_len: int | None) -> Converter:
    """text / varchar(N): NUL, invalid UTF-8 and over-length handled by policy."""

    def convert(value: Any, ctx: Context) -> str | None:
        if type(value) is not str:
            value = _as_text(column, value, ctx)
            if value is None:
                return None
        if "\x00" in value or not value.isascii():
            value = clean_text(column, value, ctx)
        if max_len is not None and len(value) > max_len:
            ctx.apply(column, "varchar_overflow", value)
            value = value[:max_len]
        return value

    return convert


def json_converter(column: str) -> Converter:
    """json: carried as text; only suspicious values are parsed (NUL/surrogate escapes, NaN, non-JSON)."""

    def convert(value: Any, ctx: Context) -> str | None:
        if value is None:
            return None
        if type(value) is not str:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    return canonical_json_number(value)
                except ValueError:
                    ctx.apply(column, "json_nan", value)
                    return "null"
            value = _as_text(column, value, ctx)
        if "\x00" in value or not value.isascii():
            value = clean_text(column, value, ctx)
        if "\\u" in value and _SUSPECT_ESCAPE.search(value):
            value = strip_bad_escapes(column, value, ctx)
        if "NaN" in value or "Infinity" in value:
            return _nan_checked(column, value, ctx)
        return value

    return convert


def validate_json(column: str, value: str | None, ctx: Context) -> str | None:
    """Strict check used when the server rejected a batch: parse, and apply invalid_json if it fails."""
    if value is None:
        return None
    try:
        json.loads(value, parse_constant=_reject_constant)
    except ValueError:
        action = ctx.apply(column, "invalid_json", value)
        return json.dumps(value, ensure_ascii=False) if action == "wrap" else None
    return value


def _reject_constant(name: str):
    raise ValueError(name)


def _nan_checked(column: str, value: str, ctx: Context) -> str | None:
    found: list[str] = []

    def constant(name: str) -> None:
        found.append(name)
        return None

    try:
        obj = json.loads(value, parse_constant=constant)
    except ValueError:
        return value  # not JSON at all: the strict path classifies it
    if not found:
        return value
    ctx.apply(column, "json_nan", value)
    return json.dumps(obj, ensure_ascii=False)


def strip_bad_escapes(column: str, value: str, ctx: Context) -> str:
    """Remove \\u0000 escapes and escaped lone surrogates textually, leaving everything else byte-identical."""
    escapes = [m for m in _ESCAPES.finditer(value) if m.group(1)]
    drop: list[tuple[int, int, str]] = []
    i = 0
    while i < len(escapes):
        m = escapes[i]
        cp = int(m.group(1), 16)
        if cp == 0:
            drop.append((m.start(), m.end(), "json_nul_escape"))
        elif 0xD800 <= cp <= 0xDBFF:
            nxt = escapes[i + 1] if i + 1 < len(escapes) else None
            if nxt is not None and nxt.start() == m.end() and 0xDC00 <= int(nxt.group(1), 16) <= 0xDFFF:
                i += 2
                continue
            drop.append((m.start(), m.end(), "json_lone_surrogate"))
        elif 0xDC00 <= cp <= 0xDFFF:
            drop.append((m.start(), m.end(), "json_lone_surrogate"))
        i += 1
    if not drop:
        return value
    for policy in sorted({d[2] for d in drop}):
        ctx.apply(column, policy, value)
    parts, pos = [], 0
    for start, end, _ in drop:
        parts.append(value[pos:start])
        pos = end
    parts.append(value[pos:])
    return "".join(parts)


def bool_converter(column: str) -> Converter:
    """boolean: 0/1 as written by SQLAlchemy; anything else by the bool_nonstandard policy."""

    def convert(value: Any, ctx: Context) -> bool | None:
        if value is None:
            return None
        if value == 1 or value == 0:
            if type(value) in (int, bool) or isinstance(value, float):
                return bool(value)
        if isinstance(value, (int, float)):
            ctx.apply(column, "bool_nonstandard", value)
            return bool(value)
        text = _as_text(column, value, ctx).strip().lower()
        if text in _TRUE or text in _FALSE:
            ctx.apply(column, "bool_nonstandard", value)
            return text in _TRUE
        ctx.apply(column, "bool_nonstandard", value)
        return bool(text)

    return convert


def int_converter(column: str, limit: int) -> Converter:
    """bigint/integer: ints as-is; reals, numeric text and date-time text by policy; range checked."""

    def convert(value: Any, ctx: Context) -> int | None:
        if type(value) is int:
            out = value
        elif value is None:
            return None
        else:
            out = _int_by_policy(column, value, ctx)
            if out is None:
                return None
        if not -limit <= out < limit:
            raise_out_of_range(column, value)
        return out

    return convert


def _int_by_policy(column: str, value: Any, ctx: Context) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise_out_of_range(column, value)
        if value != int(value):
            ctx.apply(column, "int_from_real", value)
        return int(value)
    text = _as_text(column, value, ctx).strip()
    try:
        out = int(text)
    except ValueError:
        pass
    else:
        ctx.apply(column, "int_from_text", value)
        return out
    try:
        stamp = parse_timestamp(text)
    except ValueError:
        from migrator.convert import RowRejected

        raise RowRejected(column, "int_from_text", f"not an integer: {text[:80]!r}") from None
    ctx.apply(column, "int_from_datetime", value)
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)
    return int(stamp.timestamp())


def raise_out_of_range(column: str, value: Any) -> None:
    """Integers the target type cannot hold are never wrapped or clipped."""
    from migrator.convert import RowRejected

    raise RowRejected(column, "int_out_of_range", f"value {value!r} out of range for the target integer type")


def date_converter(column: str) -> Converter:
    """date: 'YYYY-MM-DD' text; anything else by date_invalid."""

    def convert(value: Any, ctx: Context) -> dt.date | None:
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(str(value).strip())
        except ValueError:
            ctx.apply(column, "date_invalid", value)
            return None

    return convert


def timestamp_converter(column: str) -> Converter:
    """timestamp: SQLite DATETIME text; epoch numbers by timestamp_from_epoch."""

    def convert(value: Any, ctx: Context) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ctx.apply(column, "timestamp_from_epoch", value)
            return dt.datetime.fromtimestamp(value, dt.timezone.utc).replace(tzinfo=None)
        try:
            return parse_timestamp(_as_text(column, value, ctx))
        except ValueError:
            from migrator.convert import RowRejected

            raise RowRejected(column, "timestamp_invalid", f"not a date-time: {str(value)[:80]!r}") from None

    return convert


def float_converter(column: str) -> Converter:
    """double precision / numeric: numbers as-is, numeric text parsed."""

    def convert(value: Any, ctx: Context) -> float | None:
        if value is None or isinstance(value, float):
            return value
        return float(value)

    return convert


def bytes_converter(column: str) -> Converter:
    """bytea: blobs as-is, text encoded as UTF-8."""

    def convert(value: Any, ctx: Context) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode("utf-8", "surrogateescape")

    return convert


def unsupported_converter(column: str) -> Converter:
    """Target types the tool does not know are refused in plan; this is never reached in a run."""

    def convert(value: Any, ctx: Context) -> Any:
        raise TypeError(f"unsupported target type for column {column}")

    return convert
