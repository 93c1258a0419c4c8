"""Chroma chunks under the policy machinery (migrator.convert.vectors): every change to a chunk's text or metadata
is counted under its own policy with the action --policy chose, or the chunk is quarantined with its key."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import run_cli
from migrator.convert import vectors as cv
from migrator.convert.policies import POLICIES, Context, RowRejected, resolve_actions
from migrator.sources.chroma.client import Chunk

DEFAULTS = resolve_actions({})
README = Path(__file__).resolve().parent.parent / "README.md"


def chunk(document=None, metadata=None, *, cid="c-1", embedding=(0.5, -1.0)):
    return Chunk(cid, None if embedding is None else np.asarray(embedding, dtype=np.float32), document, metadata)


def convert(c: Chunk, **overrides):
    """(values or None, quarantine rows, fixup rows) of one chunk, as one batch of the load converts it."""
    conv = cv.ChunkConverter(resolve_actions(overrides))
    return conv.values(c), conv.quarantine, conv.fixups


# --- one policy at a time, each of its actions ------------------------------------------------------------------

CASES = {  # policy -> (a chunk it fires on, the column, what the kept chunk holds: (text, vmetadata as data))
    "nul_in_text": [
        (chunk("a\x00b\x00", {"k": "v"}), "text", ("ab", {"k": "v"})),
        (chunk("doc", {"k": "x\x00y", "n": 1}), "vmetadata", ("doc", {"k": "xy", "n": 1})),
        (chunk("doc", {"k\x00": 2}), "vmetadata", ("doc", {"k": 2})),
    ],
    "lone_surrogate_in_text": [
        (chunk("a\ud800b\udfff", None), "text", ("ab", None)),
        (chunk(None, {"s": "x\udc80y"}), "vmetadata", (None, {"s": "xy"})),
        (chunk("doc", {"k\ud83d": True}), "vmetadata", ("doc", {"k": True})),
    ],
    "json_nan": [
        (chunk("doc", {"n": float("nan"), "ok": 0.5}), "vmetadata", ("doc", {"n": None, "ok": 0.5})),
        (chunk("doc", {"i": float("inf"), "j": -math.inf}), "vmetadata", ("doc", {"i": None, "j": None})),
        (chunk("doc", {"l": [1.0, float("nan"), "a\x00"]}), "vmetadata", ("doc", {"l": [1.0, None, "a"]})),
    ],
}


def _cases():
    return [(policy, action, c, column, want) for policy, cases in CASES.items() for c, column, want in cases
            for action in POLICIES[policy][1]]


@pytest.mark.parametrize("policy,action,c,column,want", _cases())
def test_each_chunk_policy_and_action(policy, action, c, column, want):
    values, quarantine, fixups = convert(c, **{policy: action})
    if action == "reject":
        assert values is None and fixups == []
        [(key, reason, q_policy, q_column, row_json)] = quarantine
        assert (key, q_policy, q_column) == ('["c-1"]', policy, column)
        assert f"({policy})" in reason and POLICIES[policy][2] in reason
        back = json.loads(row_json)  # the whole chunk, ASCII JSON: nothing of it lost
        assert back["id"] == "c-1" and back["embedding"] == [0.5, -1.0] and row_json.isascii()
        return
    text, meta = values
    assert (text, None if meta is None else json.loads(meta)) == want
    assert quarantine == []
    mine = [f for f in fixups if f[2] == policy]
    assert [(k, col, a) for k, col, _, a, _ in mine] == [('["c-1"]', column, action)]  # once per chunk and column
    original = json.loads(mine[0][4], parse_constant=lambda name: name)
    assert original == (c.document if column == "text" else _jsonable(c.metadata))


def _jsonable(meta):
    def plain(v):
        if isinstance(v, float) and not math.isfinite(v):
            return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        return [plain(x) for x in v] if isinstance(v, list) else v

    return {k: plain(v) for k, v in meta.items()}


def test_default_actions_strip_and_null():
    assert {p: DEFAULTS[p] for p in cv.CHUNK_POLICIES} == {
        "nul_in_text": "strip", "lone_surrogate_in_text": "strip", "json_nan": "null"}
    assert POLICIES["lone_surrogate_in_text"][1] == ("strip", "reject")


def test_keep_is_the_one_action_that_keeps_a_chunk():
    """verify recomputes a loaded chunk with KEEP: true only while each chunk policy has one non-reject action."""
    for policy in cv.CHUNK_POLICIES:
        keeping = [a for a in POLICIES[policy][1] if a != "reject"]
        assert keeping == [cv.KEEP[policy]] == [DEFAULTS[policy]]


def test_a_chunk_hit_by_several_policies_is_counted_under_each_once():
    c = chunk("t\x00\ud800", {"a": "x\x00", "b": "y\x00", "c": float("inf"), "d": float("nan"), "e": "\udc80"})
    values, quarantine, fixups = convert(c)
    assert quarantine == [] and values[0] == "t"
    assert json.loads(values[1]) == {"a": "x", "b": "y", "c": None, "d": None, "e": ""}
    assert sorted((col, p, a) for _, col, p, a, _ in fixups) == [
        ("text", "lone_surrogate_in_text", "strip"), ("text", "nul_in_text", "strip"),
        ("vmetadata", "json_nan", "null"), ("vmetadata", "lone_surrogate_in_text", "strip"),
        ("vmetadata", "nul_in_text", "strip")]
    # any of them set to reject quarantines the chunk under that policy, whatever the others say
    for policy in cv.CHUNK_POLICIES:
        values, quarantine, fixups = convert(c, **{policy: "reject"})
        assert values is None and fixups == [] and [q[2] for q in quarantine] == [policy]


def test_clean_chunks_are_carried_as_they_are():
    meta = {"name": "ünï ✓.pdf", "start_index": 2 ** 62, "ratio": 0.1, "ok": False, "neg": -3.5e-7,
            "embedding_config": "{'engine': '', 'model': 'x'}", "tags": ["a", 1, 2.5]}
    doc = "plain text, ünïcödé and 😀"
    values, quarantine, fixups = convert(chunk(doc, meta))
    assert values[0] is doc and json.loads(values[1]) == meta and not quarantine and not fixups
    assert convert(chunk(None, None))[0] == (None, None)
    assert convert(chunk("", {}))[0] == ("", "{}")


def test_a_key_that_becomes_another_key_rejects_the_chunk_even_when_stripping():
    """Stripping "a\\x00" to "a" beside an existing "a" would lose one of the two values: quarantined instead."""
    for meta in ({"a": 1, "a\x00": 2}, {"a\x00": 2, "a": 1}, {"\x00a": 1, "a\x00": 2}, {"k\ud800": 1, "k": 2}):
        values, quarantine, fixups = convert(chunk("doc", meta))
        assert values is None and fixups == []
        [(key, reason, policy, column, _)] = quarantine
        assert key == '["c-1"]' and column == "vmetadata" and policy in ("nul_in_text", "lone_surrogate_in_text")
        assert "already has" in reason


def test_quarantine_rows_of_the_load_itself_keep_the_whole_chunk():
    conv = cv.ChunkConverter(DEFAULTS)
    lost = chunk("doc\x00", {"k": "v"}, cid='id "quoted" \u00e9', embedding=None)
    conv.reject(lost, "no vector in the Chroma store for this chunk", "missing_vector", "vector")
    [(key, reason, policy, column, row_json)] = conv.quarantine
    assert json.loads(key) == ['id "quoted" \u00e9'] and key.isascii()
    assert (policy, column) == ("missing_vector", "vector")
    assert json.loads(row_json) == {"id": lost.id, "document": "doc\x00", "metadata": {"k": "v"}, "embedding": None}


def test_loaded_values_are_what_a_non_rejecting_run_loads():
    c = chunk("t\x00", {"a\ud800": float("inf"), "b": "x"})
    assert cv.loaded_values(c) == convert(c)[0] == convert(c, json_nan="null", nul_in_text="strip")[0]


_text = st.text(st.characters(exclude_categories=()))  # lone surrogates and NUL included
_scalar = st.one_of(_text, st.integers(-(2 ** 63), 2 ** 63 - 1), st.floats(), st.booleans(),
                    st.lists(st.one_of(st.text(max_size=5), st.floats()), max_size=3))


@given(_text, st.dictionaries(st.text(st.characters(exclude_categories=()), max_size=8), _scalar, max_size=6))
@settings(max_examples=300, deadline=None)
def test_any_chunk_arrives_equal_or_is_counted(document, meta):
    values, quarantine, fixups = convert(chunk(document, meta))
    if values is None:  # only two keys that scrub to one
        [q] = quarantine
        assert "already has" in q[1]
        return
    text, vmeta = values
    fired = {(col, p) for _, col, p, _, _ in fixups}
    assert len(fired) == len(fixups)  # never counted twice
    assert text == re.sub("[\x00\ud800-\udfff]", "", document)
    assert (("text", "nul_in_text") in fired) == ("\x00" in document)
    assert (("text", "lone_surrogate_in_text") in fired) == bool(re.search("[\ud800-\udfff]", document))
    back = json.loads(vmeta)
    assert "\\u0000" not in vmeta and not re.search("[\x00\ud800-\udfff]", vmeta)
    vmeta.encode("utf-8")  # PostgreSQL can store every character of it
    assert len(back) == len(meta)
    if not any(col == "vmetadata" for col, _ in fired):
        assert back == meta and all(type(back[k]) is type(v) for k, v in meta.items())


@given(st.dictionaries(st.one_of(st.text(st.characters(exclude_categories=()), max_size=8),
                               st.text(alphabet="\\u0\x00", max_size=8)), _scalar, max_size=6))
@settings(max_examples=300, deadline=None)
def test_vmetadata_in_one_pass_is_the_same_as_value_by_value(meta):
    """vmetadata's one-pass JSON (the common case) returns only what the value-by-value path would, policies
    included (a NUL, a lone surrogate or a NaN anywhere sends it that way)."""
    actions = resolve_actions({})
    fast, slow = Context(actions), Context(actions)
    try:
        want = cv._vmetadata_each(meta, slow)
    except RowRejected:
        with pytest.raises(RowRejected):
            cv.vmetadata(meta, fast)
        return
    assert cv.vmetadata(meta, fast) == want
    assert [(f.column, f.policy, f.action) for f in fast.fixups] == [(f.column, f.policy, f.action)
                                                                        for f in slow.fixups]


# --- the policy table, the CLI and the README ---------------------------------------------------------------------

def test_policy_overrides_are_checked_for_the_new_policy():
    assert resolve_actions({"lone_surrogate_in_text": "reject"})["lone_surrogate_in_text"] == "reject"
    with pytest.raises(ValueError, match="allows strip, reject"):
        resolve_actions({"lone_surrogate_in_text": "null"})
    ctx = Context(resolve_actions({"nul_in_text": "reject"}))
    with pytest.raises(RowRejected) as rej:
        cv.text("a\x00", ctx)
    assert (rej.value.column, rej.value.policy) == ("text", "nul_in_text")


def test_migrate_policies_lists_every_policy_and_the_readme_names_them():
    out = run_cli("policies")
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0]: line.split()[2] for line in out.stdout.splitlines() if line.strip()}
    assert listed == {name: spec[0] for name, spec in POLICIES.items()}
    readme = README.read_text()
    assert [name for name in POLICIES if f"`{name}`" not in readme] == []
