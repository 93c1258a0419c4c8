"""The load's read side: batches read and converted in a thread, one ahead of the COPY that writes them."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

from migrator.catalog.schema import qi
from migrator.convert.table import TableConverter
from migrator.plan.model import TablePlan
from migrator.snapshot import Snapshot
from migrator.sources import sqlite as src


@dataclass
class ReadBatch:
    raws: list[tuple]
    first_key: int
    last_key: int
    nbytes: int
    converted: object = None


class Reader:
    """Reads and converts batches in a thread, one batch ahead of the writer (bounded: queue of 1)."""

    def __init__(self, snapshot: Snapshot, table: TablePlan, policies: dict, *, after: int, until: int = src.LAST):
        self.table = table
        self.conv = TableConverter(table, policies) if table.action == "load" else None
        self.columns = [c.name for c in table.columns if c.source_type is not None]
        self.after = after
        self.until = until
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(snapshot,), daemon=True)
        self.thread.start()

    def _run(self, snapshot: Snapshot) -> None:
        conn = src.connect(snapshot.db_path, immutable=True)
        order = _self_ref_order(conn, self.table) if self.table.self_ref else None
        try:
            while not self.closed.is_set():
                item = self._read(conn, order)
                self._put(item)
                if item is None:
                    return
        except BaseException as exc:  # hand any failure to the writer side
            self._put(exc)
        finally:
            conn.close()

    def _read(self, conn, order: list[int] | None) -> ReadBatch | None:
        t = self.table
        if order is None:
            raws, last = src.read_batch(conn, t.name, self.columns, after=self.after, until=self.until,
                                        max_rows=t.batch_rows, max_bytes=t.batch_bytes)
            first = raws[0][0] if raws else None
        else:
            start = max(self.after, 0)
            ids = order[start:start + t.batch_rows]
            raws = _rows_by_rowid(conn, t.name, self.columns, ids)
            first, last = start + 1, start + len(ids)
        if not raws:
            return None
        self.after = last
        item = ReadBatch(raws, first, last, getattr(raws, "nbytes", 0) or sum(map(src.row_bytes, raws)))
        item.converted = self.conv.convert(raws) if self.conv else None
        return item

    def _put(self, item) -> None:
        while not self.closed.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def next(self) -> ReadBatch | None:
        """The next batch (blocking); re-raises a reader failure; None once closed (never blocks forever)."""
        while True:
            try:
                item = self.queue.get(timeout=0.2)
                break
            except queue.Empty:
                if self.closed.is_set() or not self.thread.is_alive() and self.queue.empty():
                    return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (used on interruption)."""
        self.closed.set()


def _self_ref_order(conn, table: TablePlan) -> list[int]:
    """Rowids with every parent before its children (rows in cycles or with missing parents come last)."""
    col, ref = table.self_ref["column"], table.self_ref["ref_column"]
    rows = conn.execute(f"SELECT rowid, {qi(ref)}, {qi(col)} FROM {qi(table.name)} ORDER BY rowid")
    children: dict = {}
    rowid_of, all_ids = {}, []
    for rowid, key, parent in rows:
        all_ids.append(rowid)
        rowid_of.setdefault(key, rowid)
        children.setdefault(parent, []).append(rowid)
    keys = {rowid: key for key, rowid in rowid_of.items()}
    order, seen = [], set()
    frontier = [r for p, rs in children.items() if p is None or p not in rowid_of for r in rs]
    while frontier:
        nxt = []
        for r in frontier:
            if r in seen:
                continue
            seen.add(r)
            order.append(r)
            nxt += children.get(keys.get(r), []) if r in keys else []
        frontier = nxt
    order += [r for r in all_ids if r not in seen]
    return order


def _rows_by_rowid(conn, table: str, cols: list[str], ids: list[int]) -> list[tuple]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    found = {r[0]: r for r in conn.execute(
        f"SELECT rowid, {', '.join(qi(c) for c in cols)} FROM {qi(table)} WHERE rowid IN ({marks})", ids)}
    return [found[i] for i in ids if i in found]
