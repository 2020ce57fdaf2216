"""The three-model ZeroEval suite the router-training tests train on."""

from xrouter.evaluate.suites import Suite

POOL = ("gpt-4o-mini-2024-07-18", "claude-3-haiku-20240307", "gemma-2-2b-it")
SUITE = Suite(
    name="zeroeval3",
    source="zeroeval",
    pool=POOL,
    strong=POOL[0],
    weak=POOL[2],
    self_model=POOL[2],
)
