"""The plan as data: printed by `migrate plan`, saved as JSON, executed by `migrate run`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from migrator.errors import MigrationError, PreflightError, TransientError

if TYPE_CHECKING:  # the model is data every stage imports: it does not import a reader or a target at run time
    from migrator.sources.chroma.client import CollectionInfo
    from migrator.targets.pgvector import VectorTableSpec


UNREACHABLE = ("target-unreachable", "pgvector-target-unreachable")  # transient: the plan could not look


@dataclass
class Check:
    severity: str  # error | warning | info
    code: str
    message: str
    detail: str | None = None
    hint: str | None = None


@dataclass
class ColumnPlan:
    name: str
    source_type: str | None
    target_type: str | None
    nullable: bool = True
    conversion: str = ""


@dataclass
class TablePlan:
    name: str
    action: str  # load | quarantine (not in the target schema) | stamp (alembic_version) | absent
    rows: int = 0
    bytes: int = 0
    columns: list[ColumnPlan] = field(default_factory=list)
    key: list[str] = field(default_factory=list)  # the primary key, else a unique index's columns (plan.keys)
    key_index: str | None = None  # the unique index the key comes from; None: the primary key (or no key)
    fks: list[dict] = field(default_factory=list)
    self_ref: dict | None = None
    batch_rows: int = 0
    batch_bytes: int = 0
    order: int = 0

    @property
    def copy_columns(self) -> list[ColumnPlan]:
        """Columns that exist on both sides (copied by name)."""
        return [c for c in self.columns if c.source_type is not None and c.target_type is not None]


@dataclass
class VectorPlan:
    """The vector lane's part of the plan: which collections go into which `document_chunk`."""

    source: str  # "snapshot" (the snapshot's Chroma files) or "http" (a Chroma server)
    target: str | None  # PGVECTOR_DB_URL, masked
    spec: "VectorTableSpec"  # document_chunk as HridaAI creates it with the PGVECTOR_* settings
    collections: list["CollectionInfo"] = field(default_factory=list)
    collisions: dict[str, dict[str, str]] = field(default_factory=dict)  # collection -> {chunk id -> first owner}
    summary: str = ""

    def collection(self, name: str) -> "CollectionInfo":
        """The plan of one collection."""
        return next(c for c in self.collections if c.name == name)


@dataclass
class Plan:
    snapshot_id: str
    source_revision: str | None
    known_revisions: list[str]
    mode: str  # create | existing | resume
    target: str | None
    target_state: str
    schema: str
    tables: list[TablePlan] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    policies: dict[str, str] = field(default_factory=dict)
    orphans: str = "quarantine"
    vectors: VectorPlan | None = None
    server: dict = field(default_factory=dict)

    @property
    def errors(self) -> list[Check]:
        """Error-level checks: any of them stops `run` (exit 4)."""
        return [c for c in self.checks if c.severity == "error"]

    def refusal(self) -> MigrationError:
        """The error for a plan with error-level checks: `run` refuses to start, `plan` prints the plan and exits
        with it. Names the first checks and what to do about them. Exit 4 (PreflightError), or 75 (TransientError)
        when a target could not be reached: the plan is incomplete, and the same command may pass once it is up."""
        unreachable = [c for c in self.errors if c.code in UNREACHABLE]
        hints = list(dict.fromkeys(c.hint for c in (unreachable or self.errors)[:3] if c.hint))
        if unreachable:
            return TransientError(unreachable[0].message, detail="; ".join(f"{c.code}: {c.detail or c.message}"
                                                                           for c in unreachable),
                                  hint="; ".join(hints))
        return PreflightError(f"the plan has {len(self.errors)} error-level checks",
                              detail="; ".join(f"{c.code}: {c.message}" for c in self.errors[:5]),
                              hint="; ".join(hints + ["fix what each [ERROR] check names, then run `migrate plan` "
                                                      "again"]))

    def table(self, name: str) -> TablePlan:
        """The plan of one table."""
        return next(t for t in self.tables if t.name == name)

    def asdict(self) -> dict:
        """JSON form."""
        return asdict(self)

    def asstr(self) -> str:
        """For people: summary, tables in load order, checks."""
        lines = [f"snapshot         {self.snapshot_id}",
                 f"source revision  {self.source_revision or 'none'}  (catalog knows: {', '.join(self.known_revisions)})",
                 f"target           {self.target or 'embedded PostgreSQL (no DATABASE_URL)'}",
                 f"target state     {self.target_state}",
                 f"schema mode      {self.mode}  (schema {self.schema})", "",
                 f"{'#':>3} {'table':<26} {'action':<10} {'rows':>10} {'bytes':>13} {'batch rows/bytes':>22}"]
        for t in sorted(self.tables, key=lambda t: (t.order, t.name)):
            lines.append(f"{t.order:>3} {t.name:<26} {t.action:<10} {t.rows:>10,} {t.bytes:>13,} "
                         f"{t.batch_rows:>10,}/{t.batch_bytes // 1024:>7,} KiB")
        conv = [(t.name, c) for t in self.tables for c in t.columns if c.conversion not in ("", "as-is")]
        if conv:
            lines += ["", "conversions (column: source -> target: how)"]
            lines += [f"  {n}.{c.name}: {c.source_type} -> {c.target_type}: {c.conversion}" for n, c in conv]
        if self.vectors:
            lines += ["", self.vectors.summary]
        lines += ["", "checks"] + [_check_line(c) for c in self.checks] if self.checks else ["", "checks: none"]
        return "\n".join(lines)


def _check_line(c: Check) -> str:
    text = f"  [{c.severity.upper():7}] {c.code}: {c.message}"
    if c.detail:
        text += f"\n            {c.detail}"
    if c.hint:
        text += f"\n            hint: {c.hint}"
    return text
