"""bench/files.py's own pieces (no server): the data dir it builds is what `migrate files` expects."""

from __future__ import annotations

import hashlib
import random
import sqlite3

from bench import files


def test_sizes_are_mostly_documents_and_a_few_big_files():
    s = files.sizes(2000, random.Random(1))
    assert all(20_000 <= x <= 12 << 20 for x in s)
    big = sum(x > 2 << 20 for x in s)
    assert 40 <= big <= 200  # about one in twenty


def test_data_dir_rows_point_at_distinct_uploads_by_the_containers_path(tmp_path):
    data = files.make_data_dir(tmp_path, [30_000, 30_000, 3 << 20], seed=3)
    db = sqlite3.connect(data / "hridaai.db")
    rows = db.execute("SELECT id, path FROM file").fetchall()
    assert len(rows) == 3
    digests = set()
    for file_id, path in rows:
        assert path.startswith(f"/app/backend/data/uploads/{file_id}_")
        local = data / "uploads" / path.rsplit("/", 1)[1]
        digests.add(hashlib.sha256(local.read_bytes()).hexdigest())
    assert len(digests) == 3  # same sizes, different bytes
    assert sorted(p.stat().st_size for p in (data / "uploads").iterdir()) == [30_000, 30_000, 3 << 20]
