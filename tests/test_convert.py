"""Conversion policies: any value SQLite can hold either arrives equal or is counted under exactly one policy."""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import pytest
from hypothesis import example, given, settings, strategies as st

from migrator.convert import policies as convert, values as convert_values
from migrator.convert.policies import Context, RowRejected
from migrator.convert.values import converter_for

ACTIONS = convert.resolve_actions({})
sqlite_values = st.one_of(st.none(), st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
                          st.floats(allow_nan=True), st.text(), st.binary(max_size=40))


def run(conv, value):
    ctx = Context(ACTIONS)
    try:
        out = conv(value, ctx)
    except RowRejected as rej:
        return "rejected", rej.policy, []
    return "ok", out, ctx.fixups


@given(sqlite_values)
@settings(max_examples=300)
def test_text_values_arrive_or_are_counted(value):
    status, out, fixups = run(converter_for("c", "text", True), value)
    assert status == "ok"
    if value is None:
        assert out is None
    elif isinstance(value, str) and "\x00" not in value:
        assert out == value and not fixups
    else:
        assert "\x00" not in out
        assert all(f.policy in convert.POLICIES for f in fixups)
        if isinstance(value, str):
            assert [f.policy for f in fixups] == ["nul_in_text"] and out == value.replace("\x00", "")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                    max_leaves=15), st.booleans())
@settings(max_examples=300)
def test_json_documents_arrive_equal_or_stripped(doc, ascii_escaped):
    text = json.dumps(doc, ensure_ascii=ascii_escaped)
    status, out, fixups = run(converter_for("c", "json", True), text)
    assert status == "ok"
    if not fixups:
        assert out == text
    else:
        assert {f.policy for f in fixups} <= {"json_nul_escape", "json_lone_surrogate", "nul_in_text"}
        assert "\\u0000" not in out and "\x00" not in out
        json.loads(out)


@pytest.mark.parametrize("raw,expected,policy", [
    (1, True, None), (0, False, None), ("1", True, "bool_nonstandard"), ("false", False, "bool_nonstandard"),
    (2, True, "bool_nonstandard"), (None, None, None)])
def test_booleans(raw, expected, policy):
    status, out, fixups = run(converter_for("c", "boolean", True), raw)
    assert out is expected and [f.policy for f in fixups] == ([policy] if policy else [])


@pytest.mark.parametrize("raw,expected,policy", [
    (5, 5, None), ("17", 17, "int_from_text"), (1.5, 1, "int_from_real"), (2.0, 2, None),
    ("2024-01-01 00:00:00", 1704067200, "int_from_datetime")])
def test_bigint(raw, expected, policy):
    status, out, fixups = run(converter_for("c", "bigint", True), raw)
    assert out == expected and [f.policy for f in fixups] == ([policy] if policy else [])


def test_json_special_cases():
    conv = converter_for("c", "json", True)
    assert run(conv, "null")[1] == "null"  # JSON null stays distinct from SQL NULL
    assert run(conv, None)[1] is None
    assert run(conv, 0)[1] == "0"  # SQLite NUMERIC affinity stored the JSON scalar as a number
    assert run(conv, '"{\\"a\\": 1}"')[1] == '"{\\"a\\": 1}"'  # double-encoded JSON kept as it is
    status, out, fixups = run(conv, '{"a": NaN, "b": [Infinity]}')
    assert json.loads(out) == {"a": None, "b": [None]} and fixups[0].policy == "json_nan"
    status, out, fixups = run(conv, '{"a": "x\\ud800y", "b": "\\ud83d\\ude00", "c": "\\\\u0000"}')
    assert out == '{"a": "xy", "b": "\\ud83d\\ude00", "c": "\\\\u0000"}'
    assert [f.policy for f in fixups] == ["json_lone_surrogate"]


def test_over_long_varchar_and_not_null():
    status, out, fixups = run(converter_for("username", "character varying(50)", True), "u" * 60)
    assert out == "u" * 50 and fixups[0].policy == "varchar_overflow" and fixups[0].original == "u" * 60
    assert run(converter_for("meta", "json", False), None)[:2] == ("rejected", "null_in_not_null")


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError):
        convert.resolve_actions({"nope": "strip"})
    with pytest.raises(ValueError):
        convert.resolve_actions({"nul_in_text": "explode"})


# --- every column kind: any value SQLite can hold arrives equal, or is counted under exactly one policy -----------

def as_read(raw: bytes) -> str:
    """How the source hands TEXT to the converters: UTF-8, or surrogate-escaped where the bytes are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


INTERESTING = ["", " ", "0", "1", "2", "-1", "true", "FALSE", "yes", "off", "maybe", "42", " 42 ", "+7", "1_000",
               "\u0661\u0662", "1.5", "1e3", "9" * 25, "null", "NaN", "-Infinity", "[NaN, 1]", '{"a": Infinity}',
               '"NaN"', '{"a": "\\u0000"}', '"\\\\u0000"', '"\\ud800"', '"\\ud83d\\ude00"', '"\\udc00\\ud800"',
               '{"a": "b\x00"}', '"\\\\ud83d\\ude00"', '"\\\\\\ud83d\\ude00"', '"\\ud83d\\ud83d\\ude00"',
               '"\\\\u0000"', "{broken", '"x"', "[]", "2024-01-01", "2024-02-30", "20240101", "2024-01-01 10:00:00",
               "2024-01-01T10:00:00.123456", "2024-01-01 10:00:00+02:00", "2024-01-01T10:00:00Z", "10:00"]
texts = st.one_of(st.text(), st.binary(max_size=30).map(as_read), st.sampled_from(INTERESTING),
                  st.builds(json.dumps, st.recursive(st.none() | st.booleans() | st.integers() | st.floats() |
                                                     st.text(), lambda c: st.lists(c, max_size=3), max_leaves=6)))
# SQLite stores NaN as NULL, so NaN never comes back from it; infinities do
any_sqlite_value = st.one_of(st.none(), st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
                             st.floats(allow_nan=False), texts, st.binary(max_size=30),
                             st.sampled_from([0, 1, 0.0, 1.0, 2 ** 31, -(2 ** 31) - 1, 1.5, float("inf"),
                                              1704067200, 10 ** 13, b"1", b"\xff", b"2024-01-01"]))
KINDS = ["text", "character varying(5)", "json", "boolean", "bigint", "integer", "date",
         "timestamp without time zone"]


def text_of(value) -> str | None:
    if isinstance(value, bytes):
        return as_read(value)
    if isinstance(value, float):
        return repr(value)
    return None if value is None else str(value)


def _parses(text: str) -> bool:
    try:
        json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    except ValueError:
        return False
    except RecursionError:
        return True
    return True


def justified(policy: str, value, pg_type: str) -> bool:
    """Independent oracle: the defect a policy is about is present in the input."""
    text = text_of(value) or ""
    number = isinstance(value, (int, float))
    return {
        "nul_in_text": "\x00" in text,
        "invalid_utf8": any("\udc80" <= ch <= "\udcff" for ch in text),
        "varchar_overflow": len(text) > 5,
        "json_nul_escape": "\\u0000" in text,
        "json_lone_surrogate": re.search(r"\\u[dD][89a-fA-F]", text) is not None,
        "json_nan": "NaN" in text or "Infinity" in text or (isinstance(value, float) and not math.isfinite(value)),
        "invalid_json": not number and not _parses(text),
        "bool_nonstandard": not (number and value in (0, 1)),
        "int_from_text": not number,
        "int_from_real": isinstance(value, float) and not value.is_integer(),
        "int_from_datetime": not number,
        "int_invalid": not number,
        "int_out_of_range": True,
        "date_invalid": not (re.fullmatch(r"\d{4}-\d{2}-\d{2}", text, re.ASCII) and _is_date(text)),
        "timestamp_from_epoch": number,
        "timestamp_invalid": True,
        "timestamp_offset": re.search(r"(Z|[+-]\d\d:?\d\d)$", text.strip()) is not None,
    }[policy]


def arrives_equal(value, pg_type: str):
    """The documented normalisation of a value no policy touched."""
    kind = convert.kind_of(pg_type)
    if value is None:
        return None
    if kind == "text":
        return text_of(value)
    if kind == "json":
        return json.dumps(value) if isinstance(value, (int, float)) else text_of(value)
    if kind in ("bool", "int"):
        return bool(value) if kind == "bool" else int(value)
    if kind == "date":
        return dt.date.fromisoformat(text_of(value))
    return dt.datetime.fromisoformat(text_of(value).strip())


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def acceptable(out, pg_type: str) -> bool:
    """What PostgreSQL stores and reads back (json: also through ->> / ::jsonb)."""
    kind = convert.kind_of(pg_type)
    if out is None:
        return True
    if kind == "text":
        return "\x00" not in out and out.encode("utf-8") is not None and len(out) <= (5 if "(5)" in pg_type else 1e9)
    if kind == "json":
        return "\x00" not in out and _parses(out) and _clean_strings(json.loads(out))
    return isinstance(out, {"bool": bool, "int": int, "date": dt.date, "timestamp": dt.datetime}[kind]) and (
        kind != "int" or -(2 ** 31 if pg_type == "integer" else 2 ** 63) <= out < 2 ** (31 if pg_type == "integer"
                                                                                          else 63))


def _clean_strings(obj) -> bool:
    if isinstance(obj, str):
        return "\x00" not in obj and not any("\ud800" <= ch <= "\udfff" for ch in obj)
    if isinstance(obj, list):
        return all(_clean_strings(x) for x in obj)
    if isinstance(obj, dict):
        return all(_clean_strings(k) and _clean_strings(v) for k, v in obj.items())
    return True


def convert_like_a_load(pg_type: str, value, *, nullable: bool = True):
    """(status, output or rejecting policy, fixups) as the load sees it (json: validated, as the strict path)."""
    ctx = Context(ACTIONS)
    try:
        out = converter_for("c", pg_type, nullable)(value, ctx)
        if convert.kind_of(pg_type) == "json":
            out = convert_values.validate_json("c", out, ctx)
    except RowRejected as rej:
        return "rejected", rej.policy, ctx.fixups
    return "ok", out, ctx.fixups


@pytest.mark.parametrize("pg_type", KINDS)
@given(value=any_sqlite_value)
@settings(max_examples=400, deadline=None)
def test_any_value_arrives_equal_or_is_counted_once(pg_type, value):
    status, out, fixups = convert_like_a_load(pg_type, value)
    policies = [f.policy for f in fixups] + ([out] if status == "rejected" else [])
    assert len(policies) == len(set(policies)), policies  # never counted twice
    assert all(p in convert.POLICIES for p in policies)
    for p in policies:
        assert justified(p, value, pg_type), (p, value)
    assert all(f.column == "c" for f in fixups)  # each counted with its column (the key is added per row)
    if status == "ok":
        assert acceptable(out, pg_type), out
        if not fixups:
            assert out == arrives_equal(value, pg_type)


@given(value=any_sqlite_value)
@settings(max_examples=200, deadline=None)
def test_not_null_columns_reject_with_one_policy(value):
    status, out, fixups = convert_like_a_load("date", value, nullable=False)
    if value is None:
        assert (status, out) == ("rejected", "null_in_not_null")
    elif status == "rejected":  # the policy chose NULL where the target refuses it: rejected under that policy
        assert out == "date_invalid"
    else:
        assert isinstance(out, dt.date)


def test_nan_replacement_keeps_every_other_byte():
    status, out, fixups = convert_like_a_load("json", '{"a": NaN,"n": 1e400, "s": "NaN Infinity", "x": -0.0}')
    assert out == '{"a": null,"n": 1e400, "s": "NaN Infinity", "x": -0.0}'
    assert [f.policy for f in fixups] == ["json_nan"]


def test_aware_and_out_of_range_timestamps_are_policies_not_crashes():
    status, out, fixups = convert_like_a_load("timestamp without time zone", "2024-01-01 10:00:00+02:00")
    assert out == dt.datetime(2024, 1, 1, 8, 0) and [f.policy for f in fixups] == ["timestamp_offset"]
    assert convert_like_a_load("timestamp without time zone", 1.7e18)[:2] == ("rejected", "timestamp_invalid")
    assert convert_like_a_load("bigint", 2 ** 63)[:2] == ("rejected", "int_out_of_range")
    assert convert_like_a_load("bigint", "\u0661\u0662")[:2] == ("rejected", "int_invalid")
    assert convert_like_a_load("date", 20240101)[1] is None  # an integer is not 'YYYY-MM-DD': date_invalid -> NULL


def test_invalid_json_kept_by_policy_is_validated_up_front():
    """With invalid_json=wrap|null the load and verify must agree without the server's help: validated every time."""
    from migrator.convert.table import TableConverter
    from migrator.plan.model import ColumnPlan, TablePlan

    table = TablePlan("memory", "load", key=["id"], columns=[
        ColumnPlan("id", "TEXT", "text", False), ColumnPlan("meta", "JSON", "json", True),
        ColumnPlan("data", "JSON", "json", False)])
    raws = [(1, "a", "not json {", "{}"), (2, "b", '{"ok": 1}', "{}"), (3, "c", "{}", "[1,")]
    fast = TableConverter(table, convert.resolve_actions({})).convert(raws)
    assert fast.rows[0][1] == "not json {"  # default reject: PostgreSQL refuses it, the strict path quarantines it
    wrap = TableConverter(table, convert.resolve_actions({"invalid_json": "wrap"})).convert(raws)
    assert wrap.rows == [("a", '"not json {"', "{}"), ("b", '{"ok": 1}', "{}"), ("c", "{}", '"[1,"')]
    assert [(f[0], f[2], f[3]) for f in wrap.fixups] == [('["a"]', "invalid_json", "wrap"),
                                                         ('["c"]', "invalid_json", "wrap")]
    null = TableConverter(table, convert.resolve_actions({"invalid_json": "null"})).convert(raws)
    assert null.rows == [("a", None, "{}"), ("b", '{"ok": 1}', "{}")]  # NULL where allowed...
    assert [(q[0], q[2], q[3]) for q in null.quarantine] == [('["c"]', "invalid_json", "data")]  # ...else rejected


@pytest.mark.parametrize("pg_type", KINDS)
@given(values=st.lists(any_sqlite_value, min_size=1, max_size=8))
@example(values=['"\\\\ud83d\\ude00"', "{}"])  # escaped backslash, the text ud83d, then a lone low surrogate
@example(values=['"a\\ud83d', '\\ude00"', '"Na', 'N"', '"\x01"'])  # halves of a pair in two values: each alone is bad
@example(values=['["\\ud83d\\ude00", "\\u00e9"]', '{"Infinity": 1}', "null"])
@settings(max_examples=150, deadline=None)
def test_batch_conversion_equals_value_by_value(pg_type, values):
    """The batch path (column proofs that skip per-value work) never changes a result or a count."""
    from migrator.convert.table import TableConverter
    from migrator.plan.model import ColumnPlan, TablePlan

    table = TablePlan("t", "load", key=["id"], columns=[ColumnPlan("id", "TEXT", "text", False),
                                                         ColumnPlan("c", "X", pg_type, True)])
    raws = [(n, f"k{n}", v, 0) for n, v in enumerate(values)]  # (rowid, *values, stored size) as read_batch
    got = TableConverter(table, ACTIONS).convert(raws)
    want_rows, want_fixups = [], []
    for n, v in enumerate(values):
        ctx = Context(ACTIONS)
        try:
            out = converter_for("c", pg_type, True)(v, ctx)
        except RowRejected:
            continue
        want_rows.append((f"k{n}", out))
        want_fixups += [(f'["k{n}"]', f.policy) for f in ctx.fixups]
    assert list(got.rows) == want_rows
    assert [(f[0], f[2]) for f in got.fixups] == want_fixups
