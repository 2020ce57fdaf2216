"""The records store: one Parquet file of items and one of records per source.

Layout of a store directory::

    manifest.json            what was ingested, from where, when, and how fast
    items/<source>.parquet   benchmark items (see ``schema.ITEM_SCHEMA``)
    records/<source>.parquet model records (see ``schema.RECORD_SCHEMA``)

Each source is written to temporary files and moved into place only when it is
complete, so a fault while ingesting one source never damages what was ingested
before it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from xrouter.core.errors import StoreError
from xrouter.records.schema import ITEM_SCHEMA, RECORD_SCHEMA

__all__ = ["SourceInfo", "Store", "default_store_path"]

_MANIFEST = "manifest.json"


def default_store_path() -> Path:
    """``$XROUTER_HOME/store``, with ``XROUTER_HOME`` defaulting to ~/.cache/xrouter."""
    home = os.environ.get("XROUTER_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "xrouter"
    return base / "store"


@dataclass(frozen=True)
class SourceInfo:
    """What the manifest says about one ingested source."""

    name: str
    data_dir: str
    fingerprint: str
    items: int
    records: int
    seconds: float
    ingested_at: float


class Store:
    """A directory of Parquet files holding items and records, one pair per source."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- manifest --------------------------------------------------------------

    def manifest(self) -> dict[str, SourceInfo]:
        file = self.path / _MANIFEST
        if not file.exists():
            return {}
        try:
            raw = json.loads(file.read_text())
            return {name: SourceInfo(**info) for name, info in raw["sources"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"the store manifest {file} is unreadable ({exc}); delete the store "
                f"directory {self.path} and run `xrouter data ingest` again"
            ) from exc

    def sources(self) -> list[str]:
        return sorted(self.manifest())

    def _write_manifest(self, infos: dict[str, SourceInfo]) -> None:
        body = {"version": 1, "sources": {n: asdict(i) for n, i in infos.items()}}
        tmp = self.path / f"{_MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True))
        os.replace(tmp, self.path / _MANIFEST)

    @contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        """Held while the manifest is read, changed and written back, so that
        processes noting sources at once do not drop each other's entries."""
        with (self.path / f"{_MANIFEST}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- writing ---------------------------------------------------------------

    def write_source(
        self,
        name: str,
        items: pa.Table,
        records: pa.Table,
        *,
        data_dir: Path,
        fingerprint: str,
        seconds: float,
    ) -> SourceInfo:
        """Replace one source's items and records atomically and note it."""
        items = items.cast(ITEM_SCHEMA)
        records = records.cast(RECORD_SCHEMA)
        try:
            for kind, table in (("items", items), ("records", records)):
                folder = self.path / kind
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{name}.{os.getpid()}.parquet.tmp"
                pq.write_table(table, tmp, compression="zstd")
                os.replace(tmp, folder / f"{name}.parquet")
        except OSError as exc:
            raise StoreError(
                f"cannot write the store at {self.path} ({exc.strerror or exc}); "
                "give --store (or XROUTER_HOME) a writable directory"
            ) from exc
        info = SourceInfo(
            name=name,
            data_dir=str(data_dir),
            fingerprint=fingerprint,
            items=items.num_rows,
            records=records.num_rows,
            seconds=round(seconds, 2),
            ingested_at=time.time(),
        )
        with self._manifest_lock():
            infos = self.manifest()
            infos[name] = info
            self._write_manifest(infos)
        return info

    # -- reading ---------------------------------------------------------------

    def _read(
        self, kind: str, sources: Iterable[str] | None, columns: list[str] | None
    ) -> pa.Table:
        wanted = list(sources) if sources is not None else self.sources()
        if not wanted:
            raise StoreError(
                f"the store at {self.path} is empty; run "
                "`xrouter data ingest --from DIR` (DIR holding the shared data) first"
            )
        missing = [s for s in wanted if s not in self.manifest()]
        if missing:
            raise StoreError(
                f"the store at {self.path} has no source {', '.join(missing)} "
                f"(it has: {', '.join(self.sources()) or 'none'}); run "
                "`xrouter data ingest --from DIR` first"
            )
        schema = ITEM_SCHEMA if kind == "items" else RECORD_SCHEMA
        tables = []
        for source in wanted:
            file = self.path / kind / f"{source}.parquet"
            try:
                tables.append(pq.read_table(file, columns=columns))
            except (OSError, pa.ArrowInvalid) as exc:
                raise StoreError(
                    f"cannot read {file} ({exc}); run `xrouter data ingest` again"
                ) from exc
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        return pa.concat_tables([t.cast(schema) for t in tables])

    def items(
        self,
        sources: Iterable[str] | None = None,
        *,
        tasks: Iterable[str] | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        table = self._read("items", sources, columns)
        if tasks is not None:
            table = table.filter(pc.is_in(table["task"], pa.array(list(tasks))))
        return table

    def records(
        self,
        sources: Iterable[str] | None = None,
        *,
        models: Iterable[str] | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        table = self._read("records", sources, columns)
        if models is not None:
            table = table.filter(pc.is_in(table["model"], pa.array(list(models))))
        return table

    def summary(self) -> list[dict[str, Any]]:
        """Per source: item and record counts and where they came from."""
        return [asdict(info) for info in self.manifest().values()]
