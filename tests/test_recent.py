"""The bounded cache behind the live routers' per-prompt memory."""

from __future__ import annotations

from xrouter.core.recent import Recent


def test_values_are_made_once_and_the_least_recent_goes() -> None:
    made: list[str] = []
    recent: Recent[str, int] = Recent(2)

    def make(key: str) -> int:
        made.append(key)
        return len(key)

    assert recent.get("a", lambda: make("a")) == 1
    assert recent.get("bb", lambda: make("bb")) == 2
    assert recent.get("a", lambda: make("a")) == 1  # kept, and now the newest
    assert recent.get("ccc", lambda: make("ccc")) == 3  # "bb" goes
    assert len(recent) == 2
    assert recent.get("a", lambda: make("a")) == 1
    assert recent.get("bb", lambda: make("bb")) == 2
    assert made == ["a", "bb", "ccc", "bb"]
