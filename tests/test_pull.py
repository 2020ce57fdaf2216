"""`pull` against a fake GitHub at the network edge: layout, resume, and errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pytest

from xrouter.core.errors import NetworkUnavailableError
from xrouter.records.pull import pull

SUMMARY = [{"Model": "gpt-4o-mini-2024-07-18", "Mode": "greedy", "Acc": "94.24"}]
ROWS = [{"id": "gsm8k-main-test-#0", "output": ['{"answer": "18"}'], "answer": "# 18"}]
RAW = "https://raw.githubusercontent.com/yuchenlin/ZeroEval/"


def fake_github(requests: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        requests.append(url)
        if "/git/trees/" in url:
            tree = [
                {"path": "result_dirs/gsm/gpt-4o-mini-2024-07-18.json", "type": "blob"},
                {"path": "result_dirs/gsm.summary.json", "type": "blob"},
                {"path": "README.md", "type": "blob"},
            ]
            return httpx.Response(200, json={"tree": tree})
        if url.endswith("gsm/gpt-4o-mini-2024-07-18.json"):
            return httpx.Response(200, json=ROWS)
        if url.endswith("gsm.summary.json"):
            return httpx.Response(200, json=SUMMARY)
        return httpx.Response(404)

    return httpx.MockTransport(handle)


def test_pull_lays_files_out_like_the_shared_data(tmp_path: Path) -> None:
    seen: list[str] = []
    count = pull(tmp_path, ["zeroeval"], transport=fake_github(seen))
    raw = tmp_path / "zeroeval" / "raw_gz" / "gsm__gpt-4o-mini-2024-07-18.json.gz"
    assert json.loads(gzip.decompress(raw.read_bytes())) == ROWS
    official = json.loads(
        (tmp_path / "zeroeval" / "official_accuracy.json").read_text()
    )
    assert official == {"gsm": {"gpt-4o-mini-2024-07-18": 94.24}}
    assert count == 2
    assert not any("README.md" in url for url in seen)

    # a second pull finds everything in place and downloads nothing
    again: list[str] = []
    assert pull(tmp_path, ["zeroeval"], transport=fake_github(again)) == 0
    assert not any(url.startswith(RAW) for url in again)


def test_an_origin_that_moved_says_what_to_do(tmp_path: Path) -> None:
    gone = httpx.MockTransport(lambda request: httpx.Response(404))
    with pytest.raises(NetworkUnavailableError, match="answered 404; the origin may"):
        pull(tmp_path, ["routerbench"], transport=gone)
