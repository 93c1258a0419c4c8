"""The per-column converters: converter_for(column, type, nullable) and the per-kind converters behind it.

Each converter takes (value, ctx) and returns what asyncpg's binary COPY expects for the target type:
str for text and json (json travels as its text, never decoded on the fast path), bool, int, date, datetime.
Every change to a value goes through ctx.apply (a named, counted policy); nothing is changed silently.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

from migrator.convert.policies import INT_RANGE, POLICIES, VARCHAR, Context, Converter, RowRejected, \
    canonical_json_number, kind_of, parse_date, parse_timestamp, preview

SURROGATE_ESCAPED = re.compile("[\udc80-\udcff]")
# a \u0000 escape or an escaped surrogate that looks unpaired, as one fast search (the pattern starts with a literal
# backslash); false positives (an escaped backslash before "u0000", "\\\\ud83d\\ude00") only cost the exact scan
# below, false negatives cannot happen
_HIGH, _LOW = r"[dD][89abAB][0-9a-fA-F]{2}", r"[dD][c-fC-F][0-9a-fA-F]{2}"
_ANY_SUSPECT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")  # cheapest first look: no NUL or surrogate escape at all
SUSPECT_ESCAPE = re.compile(rf"\\(?:u0000|u{_HIGH}(?!\\u{_LOW})|u{_LOW}(?<!\\u{_HIGH}\\u{_LOW})"
                             rf"|\\u{_HIGH}\\u{_LOW})")
# the exact scan: escaped backslashes and valid pairs are consumed, so only real NUL / lone surrogate escapes count
_ESCAPE_SCAN = re.compile(rf"\\(?:\\|u{_HIGH}\\u{_LOW}|(u0000)|(u[dD][89a-fA-F][0-9a-fA-F]{{2}}))")
# a JSON string literal, or one of the non-standard constants Python's json writes (outside strings)
_JSON_CONSTANTS = re.compile(r'"(?:[^"\\]|\\.)*"|-?Infinity|NaN', re.DOTALL)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def clean_text(column: str, value: str, ctx: Context) -> str:
    """Apply the invalid-UTF-8 and NUL policies to one str."""
    if SURROGATE_ESCAPED.search(value) and not value.isascii():
        ctx.apply(column, "invalid_utf8", value.encode("utf-8", "surrogateescape"))
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "\x00" in value:
        ctx.apply(column, "nul_in_text", value)
        value = value.replace("\x00", "")
    return value


def _as_text(value: Any) -> str | None:
    """Any SQLite value as str (numbers as their text, blobs decoded keeping invalid bytes escaped), or None."""
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def text_converter(column: str, max_len: int | None) -> Converter:
    """text / varchar(N): NUL, invalid UTF-8 and over-length handled by policy."""

    def convert(value: Any, ctx: Context) -> str | None:
        if type(value) is not str:
            value = _as_text(value)
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
    """json: carried as text; only suspicious values are looked at (NUL/surrogate escapes, NaN, invalid UTF-8)."""

    def convert(value: Any, ctx: Context) -> str | None:
        if value is None:
            return None
        if type(value) is not str:
            if isinstance(value, (int, float)):
                try:
                    return canonical_json_number(value)
                except ValueError:
                    ctx.apply(column, "json_nan", value)
                    return "null"
            value = _as_text(value)
        if "\x00" in value or not value.isascii():
            value = clean_text(column, value, ctx)
        if "\\u" in value and suspect_escapes(value):
            value = strip_bad_escapes(column, value, ctx)
        if "NaN" in value or "Infinity" in value:
            value = replace_nan(column, value, ctx)
        return value

    return convert


def suspect_escapes(value: str) -> bool:
    """Whether a JSON text may hold a \\u0000 escape or an unpaired surrogate escape (never a false negative)."""
    first = _ANY_SUSPECT.search(value)
    return first is not None and SUSPECT_ESCAPE.search(value, max(0, first.start() - 1)) is not None


def validate_json(column: str, value: str | None, ctx: Context) -> str | None:
    """Strict check (plan's scan, a batch the server refused, or invalid_json != reject): parse, else invalid_json."""
    if value is None:
        return None
    try:
        json.loads(value, parse_constant=_reject_constant)
    except ValueError:
        action = ctx.apply(column, "invalid_json", value)
        return json.dumps(value, ensure_ascii=False) if action == "wrap" else None
    except RecursionError:  # nested deeper than Python parses: PostgreSQL decides (its refusal is quarantined)
        return value
    return value


def _reject_constant(name: str):
    raise ValueError(name)


def replace_nan(column: str, value: str, ctx: Context) -> str:
    """NaN / Infinity / -Infinity outside JSON strings -> null; every other byte of the text stays as it is."""
    constants: list[str] = []
    try:  # the C parser is fast; most texts only mention NaN inside strings (chats about code)
        json.loads(value, parse_constant=constants.append)
    except ValueError:
        return value  # not JSON at all: the strict path classifies it (invalid_json)
    except RecursionError:
        pass
    else:
        if not constants:
            return value
    found = False

    def swap(m: re.Match) -> str:
        nonlocal found
        if m.group(0)[0] == '"':
            return m.group(0)
        found = True
        return "null"

    out = _JSON_CONSTANTS.sub(swap, value)
    if found:
        ctx.apply(column, "json_nan", value)
    return out


def strip_bad_escapes(column: str, value: str, ctx: Context) -> str:
    """Remove \\u0000 escapes and escaped lone surrogates textually, leaving everything else byte-identical."""
    drop = _bad_escapes(value)
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


def _bad_escapes(value: str) -> list[tuple[int, int, str]]:
    """(start, end, policy) of every \\u0000 and every escaped surrogate that is not part of a valid pair.

    One regex pass: escaped backslashes and valid pairs are consumed (and skipped), other escapes never match, so
    a document full of \\uXXXX (stdlib json's ASCII output) costs one scan, not a Python loop per escape.
    """
    drop: list[tuple[int, int, str]] = []
    for m in _ESCAPE_SCAN.finditer(value):
        if m.group(1):
            drop.append((m.start(), m.end(), "json_nul_escape"))
        elif m.group(2):
            drop.append((m.start(), m.end(), "json_lone_surrogate"))
    return drop


def bool_converter(column: str) -> Converter:
    """boolean: 0/1 as written by SQLAlchemy; anything else by the bool_nonstandard policy."""

    def convert(value: Any, ctx: Context) -> bool | None:
        if value is None:
            return None
        if (value == 0 or value == 1) and isinstance(value, (int, float)):
            return bool(value)
        ctx.apply(column, "bool_nonstandard", value)
        if isinstance(value, (int, float)):
            return bool(value)
        text = _as_text(value).strip().lower()
        return text in _TRUE if text in _TRUE or text in _FALSE else bool(text)

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
            ctx.apply(column, "int_out_of_range", value)
            return None
        return out

    return convert


def _int_by_policy(column: str, value: Any, ctx: Context) -> int | None:
    if isinstance(value, float):
        if not math.isfinite(value):
            ctx.apply(column, "int_out_of_range", value)
            return None
        if value != int(value):
            ctx.apply(column, "int_from_real", value)
        return int(value)
    text = _as_text(value).strip()
    if _INTEGER.fullmatch(text):
        ctx.apply(column, "int_from_text", value)
        return int(text)
    try:
        stamp = parse_timestamp(text)
    except ValueError:
        ctx.apply(column, "int_invalid", value)
        return None
    ctx.apply(column, "int_from_datetime", value)
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)
    return int(stamp.timestamp())


def date_converter(column: str) -> Converter:
    """date: exactly 'YYYY-MM-DD' text; anything else by date_invalid."""

    def convert(value: Any, ctx: Context) -> dt.date | None:
        if value is None:
            return None
        try:
            return parse_date(_as_text(value))
        except ValueError:
            ctx.apply(column, "date_invalid", value)
            return None

    return convert


def timestamp_converter(column: str) -> Converter:
    """timestamp: SQLite DATETIME text; epoch numbers by timestamp_from_epoch; offsets converted to UTC."""

    def convert(value: Any, ctx: Context) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, (int, float)):
            try:
                out = dt.datetime.fromtimestamp(value, dt.timezone.utc).replace(tzinfo=None)
            except (OverflowError, ValueError, OSError):
                ctx.apply(column, "timestamp_invalid", value)
                return None
            ctx.apply(column, "timestamp_from_epoch", value)
            return out
        try:
            out = parse_timestamp(_as_text(value))
        except ValueError:
            ctx.apply(column, "timestamp_invalid", value)
            return None
        if out.tzinfo is not None:
            ctx.apply(column, "timestamp_offset", value)
            out = out.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return out

    return convert


def float_converter(column: str) -> Converter:
    """double precision / numeric: numbers as-is, numeric text parsed (HridaAI has no such column today)."""

    def convert(value: Any, ctx: Context) -> float | None:
        if value is None or isinstance(value, float):
            return value
        if isinstance(value, int):
            return float(value)
        text = _as_text(value).strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        ctx.apply(column, "number_invalid", value)
        return None

    return convert


def bytes_converter(column: str) -> Converter:
    """bytea: blobs as-is, text encoded as UTF-8 (HridaAI has no such column today)."""

    def convert(value: Any, ctx: Context) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        return _as_text(value).encode("utf-8", "surrogateescape")

    return convert


def unsupported_converter(column: str) -> Converter:
    """Target types the tool does not know are refused in plan; this is never reached in a run."""

    def convert(value: Any, ctx: Context) -> Any:
        raise TypeError(f"unsupported target type for column {column}")

    return convert


def converter_for(column: str, pg_type: str, nullable: bool) -> Converter:
    """Build the converter for one target column (done once per column, not per value)."""
    kind = kind_of(pg_type)
    if kind == "text":
        m = VARCHAR.match(pg_type.lower())
        base = text_converter(column, int(m.group(1)) if m and m.group(1) else None)
    elif kind == "int":
        base = int_converter(column, INT_RANGE[pg_type.lower()])
    else:
        base = globals()[f"{kind}_converter"](column)
    if nullable:
        return base

    def not_null(value: Any, ctx: Context) -> Any:
        out = base(value, ctx)
        if out is None:
            last = ctx.fixups[-1] if ctx.fixups and value is not None else None
            if last is not None and last.column == column and last.action == "null":
                # a policy chose NULL, but the target refuses NULL here: the row is rejected under that policy
                raise RowRejected(column, last.policy, f"{POLICIES[last.policy][2]} ({last.policy}), and "
                                                       f"{column} is NOT NULL: {preview(value)}")
            ctx.apply(column, "null_in_not_null", value)
        return out

    return not_null
