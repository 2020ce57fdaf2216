"""Ingest: read each source from a local copy of the data into the records store."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from xrouter.core.catalog import Catalog
from xrouter.core.errors import DataError
from xrouter.core.progress import Reporter, Silent
from xrouter.records.schema import items_to_table, records_to_table
from xrouter.records.sources import SOURCES, PriceBook, Source, get_source
from xrouter.records.store import SourceInfo, Store

__all__ = [
    "check_data_dir",
    "ensure_ingested",
    "ingest",
    "priced_otherwise",
    "source_fingerprint",
    "sources_under",
]

logger = logging.getLogger(__name__)


def check_data_dir(root: Path) -> Path:
    """``root`` if it is a non-empty directory; otherwise say what to pass instead."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(
            f"data directory {root} does not exist; pass --from a directory holding "
            "the recorded outputs (for example ../shared/data), or run "
            "`xrouter data pull` to download them"
        )
    if not root.is_dir():
        raise DataError(
            f"{root} is a file, not a data directory; pass --from the directory "
            "holding the source folders (zeroeval, routerbench, ...)"
        )
    if not any(root.iterdir()):
        raise DataError(
            f"data directory {root} is empty; copy the recorded outputs there or run "
            f"`xrouter data pull --to {root}`"
        )
    return root


def _catalog_digest(catalog: Catalog) -> str:
    digest = hashlib.sha256()
    for card in sorted(catalog, key=lambda c: c.id):
        digest.update(
            f"{card.id}:{card.input_per_mtok}:{card.output_per_mtok};".encode()
        )
    return digest.hexdigest()[:8]


# Bumped whenever ingest would turn the same files into different records (a new
# column, another verdict rule), so stores written by older code are refreshed.
INGEST_VERSION = 3


def source_fingerprint(source: Source, root: Path, catalog: Catalog) -> str:
    """Changes when the source's files, the catalog's prices or the ingest change."""
    return f"v{INGEST_VERSION}-{source.fingerprint(root)}-{_catalog_digest(catalog)}"


def priced_otherwise(store: Store, source: str, catalog: Catalog) -> bool:
    """Whether the store's records of ``source`` were priced by another catalog
    (or are missing): their costs are then not ``catalog``'s."""
    info = store.manifest().get(source)
    return info is None or not info.fingerprint.endswith(f"-{_catalog_digest(catalog)}")


def _present(root: Path) -> list[str]:
    return [name for name, cls in SOURCES.items() if (root / cls.folder).is_dir()]


def sources_under(root: Path) -> list[str]:
    """The sources whose folder is in the data directory ``root``."""
    return _present(check_data_dir(root))


def ingest(
    root: Path,
    store: Store,
    catalog: Catalog,
    sources: Sequence[str] | None = None,
    reporter: Reporter | None = None,
) -> list[SourceInfo]:
    """Ingest ``sources`` (default: every source found under ``root``).

    Each source lands in the store only when it was read completely; a fault in
    one leaves the sources ingested before it in place.
    """
    root = check_data_dir(root)
    names = list(dict.fromkeys(sources)) if sources else _present(root)  # once each
    if not names:
        raise DataError(
            f"{root} holds none of the source folders "
            f"({', '.join(cls.folder for cls in SOURCES.values())}); point --from at "
            "the data directory itself"
        )
    reporter = reporter or Silent()
    return [_ingest_one(get_source(n), root, store, catalog, reporter) for n in names]


def _ingest_one(
    source: Source, root: Path, store: Store, catalog: Catalog, reporter: Reporter
) -> SourceInfo:
    started = time.perf_counter()
    reporter.start(source.name, len(source.files(root)))
    prices = PriceBook(catalog)
    items, records = [], []
    for batch in source.read(root, prices, reporter.advance):
        items.append(items_to_table(batch.items))
        records.append(records_to_table(batch.records))
    info = store.write_source(
        source.name,
        pa.concat_tables(items),
        pa.concat_tables(records),
        data_dir=root.resolve(),
        fingerprint=source_fingerprint(source, root, catalog),
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "ingested %s: %d items, %d records", source.name, info.items, info.records
    )
    return info


def ensure_ingested(
    root: Path,
    store: Store,
    catalog: Catalog,
    reporter: Reporter | None = None,
    sources: Sequence[str] | None = None,
) -> list[str]:
    """Ingest the sources under ``root`` whose store copy is missing or stale.

    ``sources`` limits the check to those sources (default: all under ``root``);
    returns the sources present under ``root``.
    """
    root = check_data_dir(root)
    manifest = store.manifest()
    stale = []
    for name in _present(root):
        if sources is not None and name not in sources:
            continue
        info = manifest.get(name)
        fingerprint = source_fingerprint(get_source(name), root, catalog)
        if info is None or info.fingerprint != fingerprint:
            stale.append(name)
    if stale:
        ingest(root, store, catalog, stale, reporter)
    return _present(root)
