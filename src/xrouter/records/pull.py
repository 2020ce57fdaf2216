"""Download the recorded outputs from their public origins into a local directory.

Each source names a GitHub repository pinned at a commit and the file patterns it
needs; files land in the same layout as the shared data directory, so
``xrouter data ingest --from DIR`` reads a pulled copy exactly like a given one.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from xrouter.core.errors import NetworkUnavailableError
from xrouter.core.progress import Reporter, Silent
from xrouter.records.sources import SOURCES, Origin, get_source

__all__ = ["local_path", "pull"]

logger = logging.getLogger(__name__)

_API = "https://api.github.com/repos/{repo}/git/trees/{commit}?recursive=1"
_COMMIT = "https://api.github.com/repos/{repo}/commits/{commit}"
_RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
_PRICES = Origin(
    repo="RouteWorks/RouterArena",
    commit="4714a9a",
    patterns=("model_cost/cost.json",),
)


def local_path(source: str, remote: str) -> str:
    """Where a file of a source's origin lives in the local data layout."""
    if source == "zeroeval":
        parts = remote.split("/")
        if remote.endswith(".summary.json"):
            return f"zeroeval/summaries/{parts[-1]}"
        return f"zeroeval/raw_gz/{parts[-2]}__{parts[-1]}.gz"
    if source == "routerbench":
        return f"routerbench/{remote.rsplit('/', 1)[-1]}"
    if source == "routellm":
        return "routellm/" + remote.removeprefix("routellm/")
    if source == "llmrouter":
        return "llmrouter/" + remote.removeprefix("data/")
    return "prices/routerarena_cost.json"


def _offline(exc: Exception, url: str) -> NetworkUnavailableError:
    return NetworkUnavailableError(
        f"cannot reach {url} ({type(exc).__name__}); without network, copy the "
        "data directory from a machine that has it and use "
        "`xrouter data ingest --from DIR` instead"
    )


def _get(client: httpx.Client, url: str) -> bytes:
    try:
        response = client.get(url)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise NetworkUnavailableError(
            f"{url} answered {exc.response.status_code}; the origin may have moved. "
            "Use `xrouter data ingest --from DIR` with a local copy instead"
        ) from exc
    except httpx.HTTPError as exc:
        raise _offline(exc, url) from exc
    return response.content


def _full_commit(client: httpx.Client, origin: Origin) -> str:
    """The 40-digit commit id; the trees and raw-file addresses need the whole id."""
    if len(origin.commit) == 40:
        return origin.commit
    url = _COMMIT.format(repo=origin.repo, commit=origin.commit)
    return str(json.loads(_get(client, url))["sha"])


def _listing(client: httpx.Client, origin: Origin) -> list[str]:
    url = _API.format(repo=origin.repo, commit=origin.commit)
    tree: dict[str, Any] = json.loads(_get(client, url))
    paths = [entry["path"] for entry in tree.get("tree", []) if entry["type"] == "blob"]
    return [
        p for p in paths if any(fnmatch.fnmatchcase(p, pat) for pat in origin.patterns)
    ]


def _save(dest: Path, body: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(gzip.compress(body) if dest.suffix == ".gz" else body)
    os.replace(tmp, dest)


def _official_accuracy(root: Path) -> None:
    """Build zeroeval/official_accuracy.json from ZeroEval's summary files."""
    table: dict[str, dict[str, float]] = {}
    for file in sorted((root / "zeroeval" / "summaries").glob("*.summary.json")):
        task = file.name.removesuffix(".summary.json")
        rows = json.loads(file.read_text(encoding="utf-8"))
        table[task] = {str(r["Model"]): float(r["Acc"]) for r in rows}
    if table:
        out = root / "zeroeval" / "official_accuracy.json"
        out.write_text(json.dumps(table, indent=2))


def pull(
    root: Path,
    sources: list[str] | None = None,
    reporter: Reporter | None = None,
    timeout_s: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Download the sources' files into ``root``; returns the number of files.

    Files already present are kept, so an interrupted pull resumes where it stopped.
    ``transport`` replaces the network (tests pass a mock one).
    """
    reporter = reporter or Silent()
    names = sources or list(SOURCES)
    plan = [(n, o) for n in names for o in get_source(n).origins]
    if not sources:
        plan.append(("prices", _PRICES))  # reference prices come with a full pull
    fetched = 0
    client = httpx.Client(timeout=timeout_s, follow_redirects=True, transport=transport)
    with client:
        for name, origin in plan:
            origin = replace(origin, commit=_full_commit(client, origin))
            remote = _listing(client, origin)
            reporter.start(f"pulling {name}", len(remote))
            for path in remote:
                dest = root / local_path(name, path)
                if not dest.exists():
                    url = _RAW.format(repo=origin.repo, commit=origin.commit, path=path)
                    _save(dest, _get(client, url))
                    fetched += 1
                reporter.advance()
    _official_accuracy(root)
    logger.info("pulled %d files into %s", fetched, root)
    return fetched
