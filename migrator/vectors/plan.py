"""Plan for the vectors: per collection name, count, dimension, space, metadata keys; checks with a severity."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from migrator import ledger
from migrator.errors import MigrationError, TransientError, WorkDirError
from migrator.plan.model import Check, Plan, VectorPlan
from migrator.settings import Settings, mask_dsn
from migrator.snapshot import Snapshot
from migrator.sources.chroma import client as chroma
from migrator.targets import pgvector as pgv, postgres as pgt
from migrator.vectors import source as vectors_source

SHOW = 10


def spec_of(settings: Settings) -> pgv.VectorTableSpec:
    """document_chunk as HridaAI would create it with these PGVECTOR_* settings."""
    return pgv.VectorTableSpec(dimension=settings.vector_length, halfvec=settings.use_halfvec,
                               index_method=settings.index_method, hnsw_m=settings.hnsw_m,
                               hnsw_ef_construction=settings.hnsw_ef_construction,
                               ivfflat_lists=settings.ivfflat_lists)


async def build(settings: Settings, snapshot: Snapshot, plan: Plan, *, scan: bool = True) -> None:
    """Fill plan.vectors and add the vector checks (read-only on both sides)."""
    kind = vectors_source.kind(settings, snapshot)
    if kind is None:
        plan.checks.append(Check("warning", "no-vector-store", f"no Chroma store at {settings.vector_store}: no "
                                 "vectors will be migrated", hint="if HridaAI keeps its vectors elsewhere, set "
                                 "CHROMA_DATA_PATH (or CHROMA_HTTP_HOST) as HridaAI has it and snapshot again"))
        return
    if kind == "snapshot" and _newer_store(snapshot, plan):
        return  # never open a store the installed chromadb does not understand
    try:
        found = vectors_source.describe_files(snapshot, scan=scan) if kind == "snapshot" else None
        if found is not None:
            infos, collisions, needs_client = found
            if needs_client:  # the scratch copy for chromadb now, before anything is written to the target
                vectors_source.prepare(settings, snapshot)
        else:
            client = vectors_source.client(settings, snapshot)
            infos = chroma.describe_client(client, scan=scan)
            collisions = _collisions(infos, lambda info: vectors_source.ids(client, info.name))
    except WorkDirError:
        raise
    except MigrationError as exc:
        plan.checks.append(Check("error", "vector-source", exc.message, exc.detail, exc.hint))
        return
    except Exception as exc:  # chromadb raises many types for unreadable stores
        plan.checks.append(Check("error", "vector-source", "the Chroma store cannot be read with the installed "
                                 "chromadb", f"{exc.__class__.__name__}: {exc}"[:500],
                                 "restore vector_db/ from a backup if segment files are missing or truncated; if a "
                                 "newer chromadb wrote it, install that version"))
        return
    spec = spec_of(settings)
    if settings.pgvector_pgcrypto:
        plan.checks.append(Check("error", "pgcrypto-unsupported", "PGVECTOR_PGCRYPTO is set: HridaAI would expect "
                                 "text and metadata encrypted with pgp_sym_encrypt, which this version does not write",
                                 hint="migrate with PGVECTOR_PGCRYPTO unset into a database HridaAI uses without "
                                      "pgcrypto, or re-index the files in HridaAI after switching"))
    plan.vectors = VectorPlan(kind, mask_dsn(settings.pgvector_url), spec, list(infos), collisions,
                              _summary(infos, spec))
    plan.checks += _checks(infos, spec, collisions)
    plan.checks += _search_checks(infos, spec)
    await _target_checks(settings, plan, spec)


def _newer_store(snapshot: Snapshot, plan: Plan) -> bool:
    """An error check when a newer chromadb than the installed one wrote the store (its schema is unknown here)."""
    from migrator.sources.chroma import store as chroma_files

    newer = chroma_files.newer_than_installed((snapshot.vector_store or {}).get("schema_versions") or {},
                                              cache_dir=Path(snapshot.directory).parent)
    if newer:
        parts = ", ".join(f"{d} {v} > {k}" for d, (v, k) in newer.items())
        installed = (snapshot.vector_store or {}).get("chromadb_installed")
        plan.checks.append(Check("error", "vector-store-newer", f"the Chroma store was written by a newer chromadb "
                                 f"than the installed {installed} (internal schema {parts})",
                                 hint="install the chromadb version HridaAI used (pip install 'chromadb==X' into "
                                      "the tool's environment), then run `migrate plan` again"))
    return bool(newer)


def _collisions(infos, ids_of) -> dict[str, dict[str, str]]:
    """collection -> {chunk id -> first collection holding it}: the later occurrences (document_chunk.id is global)."""
    first: dict[str, str] = {}
    later: dict[str, dict[str, str]] = defaultdict(dict)
    for info in infos:
        for chunk_id in ids_of(info):
            if chunk_id in first:
                later[info.name][chunk_id] = first[chunk_id]
            else:
                first[chunk_id] = info.name
    return dict(later)


def _checks(infos, spec: pgv.VectorTableSpec, collisions: dict) -> list[Check]:
    out = []
    for i in infos:
        if i.dimension and i.dimension > spec.dimension:
            out.append(Check("error", "vector-too-long", f"collection {i.name}: {i.dimension}-d vectors do not fit "
                             f"vector({spec.dimension}); HridaAI would truncate them",
                             hint=f"set PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH to at least {i.dimension} "
                                  "(for HridaAI and for this tool)"))
        if i.missing_vectors:
            out.append(Check("warning", "missing-vectors", f"collection {i.name}: {i.missing_vectors} chunks have "
                             "metadata but no vector in the store (a known Chroma failure); they are quarantined and "
                             "verify reports them", hint="re-index those files in HridaAI after the migration"))
        if i.space != "cosine":
            out.append(Check("warning", "not-cosine", f"collection {i.name} uses {i.space} distance; HridaAI's "
                             "pgvector search is cosine: vectors are carried exactly, rankings may differ"))
        if i.count == 0:
            out.append(Check("info", "empty-collection", f"collection {i.name} is empty: an empty collection does "
                             "not exist in pgvector (HridaAI's has_collection is false)"))
    for name, ids in collisions.items():
        shown = ", ".join(f"{cid} (also in {other})" for cid, other in list(ids.items())[:SHOW])
        out.append(Check("warning", "chunk-id-collision", f"collection {name}: {len(ids)} chunk ids already used by "
                         "another collection; document_chunk.id is one global key: policy chunk_id_collision = "
                         "quarantine (the first collection by name keeps the id)", detail=shown))
    if spec.dimension > pgv.MAX_INDEXED_VECTOR_DIM and not spec.halfvec:
        out.append(Check("error", "vector-length-unindexable", f"vector({spec.dimension}) cannot be indexed; HridaAI "
                         "refuses this", hint="set PGVECTOR_USE_HALFVEC=true or a length <= 2000"))
    return out


async def _target_checks(settings: Settings, plan: Plan, spec: pgv.VectorTableSpec) -> None:
    try:
        conn = await pgt.connect(settings.pgvector_url, readonly=True)
    except MigrationError as exc:
        code = "pgvector-target-unreachable" if isinstance(exc, TransientError) else "pgvector-target-refused"
        plan.checks.append(Check("error", code, exc.message, exc.detail, exc.hint))
        return
    try:
        installed = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        available = await conn.fetchval("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        if installed is None and available is None:
            plan.checks.append(Check("error", "pgvector-missing", "the pgvector extension is not available on the "
                                     "target server", hint="install pgvector on the server (package "
                                     "postgresql-NN-pgvector), then a DBA runs: CREATE EXTENSION vector;"))
        elif installed is None and not await _may_create_vector(conn):
            plan.checks.append(Check("error", "pgvector-not-installed", "the vector extension is not installed in "
                                     "the target database and this user may not create it (pgvector is not a "
                                     "trusted extension: only a superuser can)",
                                     hint="a DBA runs, in the target database: CREATE EXTENSION vector;"))
        version = installed or available
        if spec.halfvec and version and pgv.version_tuple(version) < pgv.HALFVEC_MIN_VERSION:
            plan.checks.append(Check("error", "halfvec-unsupported", f"PGVECTOR_USE_HALFVEC needs pgvector >= 0.7.0, "
                                     f"the server has {version}", hint="upgrade pgvector (ALTER EXTENSION vector "
                                     "UPDATE) or unset PGVECTOR_USE_HALFVEC"))
        found = await pgv.existing_table(conn) if installed else None
        if found is not None:
            if (found["type"], found["dimension"]) != (spec.type_name, spec.dimension):
                plan.checks.append(Check("error", "document-chunk-differs", f"document_chunk exists as "
                                         f"{found['type']}({found['dimension']}), settings say {spec.column_type}",
                                         hint="set PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH / PGVECTOR_USE_HALFVEC as "
                                              "HridaAI has them, or drop the empty table"))
            rows = await conn.fetchval("SELECT count(*) FROM document_chunk")
            ledger_here = await ledger.exists(conn)
            if rows and not ledger_here:
                plan.checks.append(Check("error", "document-chunk-holds-data", f"document_chunk already holds {rows} "
                                         "chunks", hint="migrate into an empty document_chunk"))
            elif not ledger_here:
                plan.checks += _indexes_made_before_the_data(await pgv.table_indexes(conn), rows)
    finally:
        await conn.close()


def _indexes_made_before_the_data(indexes: dict[str, dict[str, str]], rows: int) -> list[Check]:
    """An ivfflat index HridaAI built at startup on the empty table is rebuilt after the load (its lists were trained
    on nothing: searches through it miss neighbours); every other index is left as it was, and said so."""
    out = []
    vector_index = indexes.get(pgv.VECTOR_INDEX)
    if vector_index and vector_index["method"] == "ivfflat" and rows == 0:
        out.append(Check("info", "vector-index-rebuild", f"{pgv.VECTOR_INDEX} (ivfflat) was built on the empty "
                         "document_chunk, before the data: it is rebuilt after the load (REINDEX: same name and "
                         "definition, its lists trained on the migrated vectors)",
                         detail=vector_index["definition"]))
    others = sorted(set(indexes) - ({pgv.VECTOR_INDEX} if out else set()))
    if others:
        out.append(Check("info", "document-chunk-indexes-kept", f"indexes document_chunk already has are left as "
                         f"they were: {', '.join(others)}", detail="; ".join(indexes[n]["definition"]
                                                                     for n in others)))
    return out


async def _may_create_vector(conn) -> bool:
    """Superuser, or (a trusted vector extension and CREATE on the database)."""
    return bool(await conn.fetchval(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR ("
        "  coalesce((SELECT bool_or(trusted) FROM pg_available_extension_versions WHERE name = 'vector'), false)"
        "  AND has_database_privilege(current_database(), 'CREATE'))"))


def _search_checks(infos, spec: pgv.VectorTableSpec) -> list[Check]:
    """Past HridaAI's threshold its searches go through an approximate index shared by every collection: say that
    verify measures the recall HridaAI will get and that tune-search is the remedy (before anything is loaded,
    recall cannot be measured)."""
    total, collections = sum(i.count for i in infos), sum(1 for i in infos if i.count)
    threshold = 50 * spec.ivfflat_lists if spec.method == "ivfflat" else 1
    if total < threshold or collections < 2:
        return []
    knob = "ivfflat.probes (1 unless the database sets it)" if spec.method == "ivfflat" else "hnsw.ef_search (40)"
    index = f"ivfflat, lists={spec.ivfflat_lists}" if spec.method == "ivfflat" else "hnsw"
    return [Check("info", "search-recall-tune", f"document_chunk will hold {total:,} vectors of {collections:,} "
                  f"collections, past HridaAI's threshold for its vector index ({index}): HridaAI's searches within "
                  f"one collection then go through that shared index with {knob}, which can miss neighbours",
                  hint="after `migrate run`, `migrate verify` measures the recall@10 HridaAI's own search statement "
                       "gets; if it is below 0.95, `migrate tune-search` sets the smallest value that reaches it "
                       "(RUNBOOK: Search quality)")]


def _summary(infos, spec: pgv.VectorTableSpec) -> str:
    lines = [f"vectors -> document_chunk {spec.column_type}, index {spec.method}",
             f"{'collection':<52} {'count':>8} {'dim':>5} {'space':<7} metadata keys"]
    for i in infos:
        lines.append(f"{i.name[:52]:<52} {i.count:>8,} {i.dimension or '-':>5} {i.space:<7} "
                     f"{', '.join(i.metadata_keys)[:60]}")
    return "\n".join(lines)
