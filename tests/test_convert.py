"""Conversion policies: any value SQLite can hold either arrives equal or is counted under exactly one policy."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from migrator import convert
from migrator.convert import Context, RowRejected, converter_for

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
