"""Value conversion: every SQLite value -> the target column's PostgreSQL type, under named, counted policies.

A value is either carried as-is (after the documented type conversion: 0/1 -> boolean, JSON scalars SQLite stored
as numbers -> their JSON text, ...), or changed by a named policy (counted per table and column, its key written to
the fixup report), or the whole row is rejected (it goes to the quarantine table with the reason).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

# policy name -> (default action, allowed actions, what it is about)
POLICIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "nul_in_text": ("strip", ("strip", "reject"), "raw NUL (0x00) in text: PostgreSQL cannot store it"),
    "json_nul_escape": ("strip", ("strip", "reject"), "\\u0000 escape in json: breaks every ->> on the row"),
    "json_lone_surrogate": ("strip", ("strip", "reject"), "escaped lone UTF-16 surrogate: PostgreSQL rejects it"),
    "lone_surrogate_in_text": ("strip", ("strip", "reject"),
                               "lone UTF-16 surrogate in a string (it has no UTF-8 form): PostgreSQL cannot store it"),
    "json_nan": ("null", ("null", "reject"), "NaN/Infinity in JSON: PostgreSQL rejects it"),
    "invalid_json": ("reject", ("reject", "wrap", "null"), "text that is not JSON in a json column"),
    "invalid_utf8": ("replace", ("replace", "reject"), "bytes that are not UTF-8 in text"),
    "bool_nonstandard": ("coerce", ("coerce", "reject"), "boolean stored as text or out of 0/1"),
    "int_from_text": ("coerce", ("coerce", "reject"), "integer stored as text"),
    "int_from_real": ("truncate", ("truncate", "reject"), "integer column holding a fractional number"),
    "int_from_datetime": ("epoch", ("epoch", "reject"), "integer column holding a date-time text"),
    "int_invalid": ("reject", ("reject", "null"), "integer column holding text that is no integer or date-time"),
    "int_out_of_range": ("reject", ("reject", "null"), "integer the target type cannot hold (never wrapped)"),
    "timestamp_from_epoch": ("coerce", ("coerce", "reject"), "timestamp column holding an epoch number"),
    "timestamp_offset": ("utc", ("utc", "reject"), "date-time with a UTC offset in a timestamp without time zone"),
    "timestamp_invalid": ("reject", ("reject", "null"), "timestamp column holding something that is no date-time"),
    "date_invalid": ("null", ("null", "reject"), "date column holding something that is not YYYY-MM-DD"),
    "number_invalid": ("reject", ("reject", "null"), "floating-point column holding text that is no number"),
    "varchar_overflow": ("truncate", ("truncate", "reject"), "text longer than the target varchar(N)"),
    "null_in_not_null": ("reject", ("reject",), "NULL in a column the target declares NOT NULL"),
    "orphan_set_null": ("set_null", ("set_null", "reject"),
                        "reference to a missing parent through an ON DELETE SET NULL foreign key"),
}


class RowRejected(Exception):
    """The row cannot be carried; it goes to quarantine with this reason."""

    def __init__(self, column: str, policy: str, reason: str):
        super().__init__(f"{column}: {reason}")
        self.column = column
        self.policy = policy
        self.reason = reason


@dataclass
class Fixup:
    column: str
    policy: str
    action: str
    original: Any = None


class Context:
    """Per-row conversion context: the chosen actions and the fixups applied to this row."""

    __slots__ = ("actions", "fixups")

    def __init__(self, actions: dict[str, str]):
        self.actions = actions
        self.fixups: list[Fixup] = []

    def apply(self, column: str, policy: str, original: Any = None) -> str:
        """Record that `policy` fired on `column`; raise RowRejected when its action is reject."""
        action = self.actions[policy]
        if action == "reject":
            raise RowRejected(column, policy, f"{POLICIES[policy][2]} ({policy}): {preview(original)}")
        self.fixups.append(Fixup(column, policy, action, _reportable(original)))
        return action


def resolve_actions(overrides: dict[str, str]) -> dict[str, str]:
    """Defaults overridden by --policy NAME=ACTION; unknown names or actions raise ValueError."""
    actions = {name: spec[0] for name, spec in POLICIES.items()}
    for name, action in overrides.items():
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
        if action not in POLICIES[name][1]:
            raise ValueError(f"policy {name} allows {', '.join(POLICIES[name][1])}, not {action!r}")
        actions[name] = action
    return actions


def preview(value: Any) -> str:
    text = repr(value.hex() if isinstance(value, bytes) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _reportable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str) and len(value) > 2000:
        return value[:2000] + f"... ({len(value)} chars)"
    return value


Converter = Callable[[Any, Context], Any]

VARCHAR = re.compile(r"^(?:character varying|varchar|character|char)(?:\((\d+)\))?$")
INT_RANGE = {"bigint": 2 ** 63, "integer": 2 ** 31, "smallint": 2 ** 15}


def kind_of(pg_type: str) -> str:
    """The conversion family of a PostgreSQL type as format_type() spells it."""
    t = pg_type.lower()
    if t in ("json", "jsonb"):
        return "json"
    if t == "text" or VARCHAR.match(t):
        return "text"
    if t in INT_RANGE:
        return "int"
    if t == "boolean":
        return "bool"
    if t == "date":
        return "date"
    if t.startswith("timestamp"):
        return "timestamp"
    if t in ("double precision", "real") or t.startswith("numeric"):
        return "float"
    if t == "bytea":
        return "bytes"
    return "unsupported"


def canonical_json_number(value: int | float) -> str:
    """JSON text of a number SQLite stored with NUMERIC affinity (NaN/Infinity are not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("non-finite")
    return json.dumps(value)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?"
                       r"(?:Z|[+-]\d{2}:?\d{2})?", re.ASCII)


def parse_date(text: str) -> dt.date:
    """Exactly 'YYYY-MM-DD' (what SQLAlchemy's Date writes on SQLite); ValueError otherwise."""
    if not _DATE.fullmatch(text):
        raise ValueError(f"not YYYY-MM-DD: {text[:40]!r}")
    return dt.date.fromisoformat(text)


def parse_timestamp(text: str) -> dt.datetime:
    """SQLite DATETIME text ('YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]', optionally with an offset); ValueError otherwise."""
    text = text.strip()
    if not _DATETIME.fullmatch(text):
        raise ValueError(f"not a date-time: {text[:40]!r}")
    return dt.datetime.fromisoformat(text)
