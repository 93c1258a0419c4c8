"""Progress: tqdm bars on a terminal, JSON-lines events otherwise (one object per line, on stderr)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from migrator import failpoints


class Progress:
    """The protocol: start(unit, rows, bytes) / advance(unit, rows, bytes, batch) / finish(unit) / event(...)."""

    def start(self, unit: str, *, rows: int, nbytes: int) -> None: ...

    def advance(self, unit: str, *, rows: int, nbytes: int, batch: int) -> None: ...

    def finish(self, unit: str) -> None: ...

    def event(self, stage: str, **fields: Any) -> None: ...

    def close(self) -> None: ...


class NullProgress(Progress):
    """Nothing shown (library use, tests)."""


class JsonProgress(Progress):
    """One JSON object per line: stage, unit, batch, rows, bytes, rate and ETA."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 2.0):
        self.stream = stream or sys.stderr
        self.interval = interval
        self.units: dict[str, dict] = {}

    def start(self, unit: str, *, rows: int, nbytes: int) -> None:
        self.units[unit] = {"total": rows, "total_bytes": nbytes, "rows": 0, "bytes": 0, "t0": time.monotonic(),
                            "last": 0.0}
        self.event("load", unit=unit, state="start", total_rows=rows, total_bytes=nbytes)

    def advance(self, unit: str, *, rows: int, nbytes: int, batch: int) -> None:
        u = self.units.setdefault(unit, {"total": 0, "total_bytes": 0, "rows": 0, "bytes": 0,
                                         "t0": time.monotonic(), "last": 0.0})
        u["rows"] += rows
        u["bytes"] += nbytes
        now = time.monotonic()
        if now - u["last"] >= self.interval or u["rows"] >= u["total"]:
            u["last"] = now
            elapsed = max(now - u["t0"], 1e-6)
            rate = u["rows"] / elapsed
            eta = (u["total"] - u["rows"]) / rate if rate and u["total"] > u["rows"] else 0.0
            self.event("load", unit=unit, batch=batch, rows=u["rows"], total_rows=u["total"], bytes=u["bytes"],
                       rate_rows_s=round(rate, 1), rate_mb_s=round(u["bytes"] / elapsed / 1e6, 2),
                       eta_s=round(eta, 1))

    def finish(self, unit: str) -> None:
        self.event("load", unit=unit, state="done", rows=self.units.get(unit, {}).get("rows", 0))

    def event(self, stage: str, **fields: Any) -> None:
        doc = {"ts": round(time.time(), 3), "stage": stage, **fields}
        self.stream.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()
        failpoints.reached(doc)


class TqdmProgress(Progress):
    """A bar per unit (rows, MB, rate, ETA) and an overall one."""

    def __init__(self, total_rows: int = 0):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bars: dict[str, Any] = {}
        self.overall = tqdm(total=total_rows, desc="overall", unit="row", unit_scale=True, position=0)

    def start(self, unit: str, *, rows: int, nbytes: int) -> None:
        self.bars[unit] = self._tqdm(total=rows, desc=unit[:24], unit="row", unit_scale=True, leave=False,
                                     position=1)

    def advance(self, unit: str, *, rows: int, nbytes: int, batch: int) -> None:
        if unit in self.bars:
            self.bars[unit].update(rows)
            self.bars[unit].set_postfix(MB=f"{nbytes / 1e6:.1f}", batch=batch)
        self.overall.update(rows)

    def finish(self, unit: str) -> None:
        bar = self.bars.pop(unit, None)
        if bar is not None:
            bar.close()

    def event(self, stage: str, **fields: Any) -> None:
        self.overall.write(f"{stage}: " + ", ".join(f"{k}={v}" for k, v in fields.items()))

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.overall.close()


def choose(log_format: str, *, total_rows: int = 0) -> Progress:
    """tqdm on a terminal, JSON lines when not (or when --log-format json), nothing with --log-format none."""
    if log_format == "none":
        return NullProgress()
    if log_format == "json" or (log_format == "auto" and not sys.stderr.isatty()):
        return JsonProgress()
    return TqdmProgress(total_rows)
