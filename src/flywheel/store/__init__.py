"""Tables and backends. The rest of Flywheel sees Arrow tables and this interface, never SQL
dialects: DuckDB (embedded, the default) and PostgreSQL (for servers; several processes may share
one database)."""

from __future__ import annotations

from pathlib import Path

from flywheel.errors import StoreError
from flywheel.spec import Spec
from flywheel.store.base import Store, Tables, tables_for

__all__ = ["Store", "Tables", "open_store", "tables_for"]


def open_store(spec: Spec, url: str | None = None) -> Store:
    """Open (creating and migrating as needed) the store named by ``url`` or the spec, with
    its warm tier (see :mod:`flywheel.store.warm`): the two are read as one."""
    from flywheel.store.warm import Tiered

    archive = spec.archive.url if spec.archive else None
    return Tiered(_open_hot(spec, url), tables_for(spec), archive)


def _open_hot(spec: Spec, url: str | None = None) -> Store:
    url = url or spec.storage_url
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError(f"storage.url: {url!r} is not a URL like duckdb:///path/to/file.duckdb")
    if scheme == "duckdb":
        from flywheel.store.duckdb import DuckDBStore

        path = rest[1:] if rest.startswith("/") else rest  # duckdb:///rel, duckdb:////abs
        if path in ("", ":memory:"):
            return DuckDBStore(":memory:", tables_for(spec), spec.dedup_window_seconds)
        resolved = Path(path) if Path(path).is_absolute() else spec.base_dir / path
        return DuckDBStore(str(resolved), tables_for(spec), spec.dedup_window_seconds)
    if scheme in ("postgresql", "postgres"):
        from flywheel.store.postgres import PostgresStore

        return PostgresStore(url, tables_for(spec), spec.dedup_window_seconds)
    raise StoreError(
        f"storage.url: backend {scheme!r} is not available (supported: duckdb, postgresql)"
    )
