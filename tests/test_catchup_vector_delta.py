"""Issue 15 groundwork: what changed in a Chroma store between two snapshots (migrator/catchup/vector_delta.py), on
stores written by chromadb itself: collections added, removed, remade under the same name; chunks added, changed
(vector or metadata) and deleted; collections not written in between are not read at all."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from migrator.catchup import vector_delta
from migrator.sources.chroma import direct as chroma_direct

_BEFORE = textwrap.dedent('''
    import sys, numpy as np, chromadb
    from chromadb.config import Settings
    client = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False))
    rng = np.random.default_rng(3)
    def add(name, n, prefix, dim=8):
        col = client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
        col.add(ids=[f"{prefix}{i}" for i in range(n)], embeddings=rng.standard_normal((n, dim)).astype(np.float32),
                documents=[f"doc {prefix}{i}" for i in range(n)], metadatas=[{"i": i} for i in range(n)])
    add("keep", 20, "k")
    add("grow", 10, "g")
    add("edit", 10, "e")
    add("gone", 5, "x")
    add("reborn", 5, "r")
    add("big-keep", 1200, "bk")
    add("big-edit", 1200, "be")
''')

_CHANGES = textwrap.dedent('''
    import sys, numpy as np, chromadb
    from chromadb.config import Settings
    client = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False))
    rng = np.random.default_rng(4)
    vec = lambda n: rng.standard_normal((n, 8)).astype(np.float32)
    get = lambda name: client.get_collection(name, embedding_function=None)
    get("grow").add(ids=["g10", "g11", "g12"], embeddings=vec(3), documents=["a", "b", "c"])
    edit = get("edit")
    edit.update(ids=["e1"], embeddings=vec(1))
    edit.update(ids=["e2"], metadatas=[{"i": 2, "new": True}])
    edit.delete(ids=["e3"])
    client.delete_collection("gone")
    client.delete_collection("reborn")
    client.create_collection("reborn", metadata={"hnsw:space": "cosine"}, embedding_function=None).add(
        ids=["r0"], embeddings=vec(1), documents=["again"])
    client.create_collection("fresh", metadata={"hnsw:space": "cosine"}, embedding_function=None).add(
        ids=["f0", "f1"], embeddings=vec(2), documents=["1", "2"])
    get("big-edit").upsert(ids=["be5", "be-new"], embeddings=vec(2), documents=["five", "new"])
''')


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("vdelta")
    old = base / "old"
    subprocess.run([sys.executable, "-c", _BEFORE, str(old)], check=True, timeout=120)
    new = base / "new"
    shutil.copytree(old, new)
    subprocess.run([sys.executable, "-c", _CHANGES, str(new)], check=True, timeout=120)
    return old, new


def test_store_delta_names_every_change_and_reads_only_written_collections(stores, tmp_path, monkeypatch):
    old, new = (chroma_direct.open_store(shutil.copytree(p, tmp_path / p.name)) for p in stores)
    read = []
    real = vector_delta._iter_digests
    monkeypatch.setattr(vector_delta, "_iter_digests", lambda store, name: (read.append(name), real(store, name))[1])
    delta = vector_delta.store_delta(old, new)
    assert delta.added == ["fresh", "reborn"] and delta.removed == ["gone", "reborn"]
    assert sorted(delta.untouched) == ["big-keep", "keep"]
    changed = {c.name: c for c in delta.changed}
    assert sorted(changed) == ["big-edit", "edit", "grow"]
    assert sorted(changed["grow"].upserted) == ["g10", "g11", "g12"] and changed["grow"].removed == []
    assert sorted(changed["edit"].upserted) == ["e1", "e2"] and changed["edit"].removed == ["e3"]
    assert changed["edit"].unchanged == 7
    assert sorted(changed["big-edit"].upserted) == ["be-new", "be5"] and changed["big-edit"].unchanged == 1199
    assert sorted(set(read)) == ["big-edit", "edit", "grow"]  # the collections not written in between: not read
    old.close()
    new.close()
