"""The public sources of recorded model outputs that xrouter ingests."""

from __future__ import annotations

from xrouter.core.errors import ConfigError
from xrouter.records.sources.base import Origin, PriceBook, Source, SourceBatch
from xrouter.records.sources.llmrouter import LLMRouter
from xrouter.records.sources.routellm import RouteLLM
from xrouter.records.sources.routerbench import RouterBench
from xrouter.records.sources.zeroeval import ZeroEval

__all__ = ["SOURCES", "Origin", "PriceBook", "Source", "SourceBatch", "get_source"]

SOURCES: dict[str, type[Source]] = {
    cls.name: cls for cls in (ZeroEval, RouterBench, RouteLLM, LLMRouter)
}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]()
    except KeyError:
        raise ConfigError(
            f"unknown source {name!r}; choose from {', '.join(SOURCES)}"
        ) from None
