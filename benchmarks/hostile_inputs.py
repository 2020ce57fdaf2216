"""How the tool-call parser and the answer verifiers scale on hostile text.

    python benchmarks/hostile_inputs.py [--repeats 3]

Each hostile input (unclosed brackets, deep nesting, repeated call openers,
oversized answers) is read at one size and at four times that size, side by
side in one run; the best of ``repeats`` timings is printed for each, with the
ratio of the two. Work linear in the length gives a ratio near 4 (a little
more once the data outgrows the CPU's caches); quadratic work gives 16.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from xrouter.orchestrator.parsing import parse_tool_calls
from xrouter.records.verifiers import VERIFIER_KINDS, extract_answer, verify

MINI = "call_gpt_4o_mini_2024_07_18"

# text made of n repeats of a unit, for the router-reply parser
PARSER: dict[str, Callable[[int], str]] = {
    "braces": lambda n: "{" * n,
    "brackets": lambda n: "[" * n,
    "nested": lambda n: '{"a":' * n,
    "nested-calls": lambda n: f'{{"name": "{MINI}", "arguments": ' * n,
    "tags": lambda n: '<tool_call>{"' * n,
    "fences": lambda n: "```json\n{" * n,
    "pythonic": lambda n: "call_x(\n" * n,
    "closed-pythonic": lambda n: "call_x(\n" * n + ")" * n,
    "deep": lambda n: "{" * n + "}" * n,
}
PARSER_CHARS = 50_000  # the smaller size, roughly

# model replies, for every verifier kind
REPLIES: dict[str, Callable[[int], str]] = {
    "boxed": lambda n: "\\boxed{" * n,
    "braces-answer": lambda n: "{" * n + '"answer": 5',
    "nested-list": lambda n: '"answer": [' + "[" * n,
    "backslashes": lambda n: '"answer": "' + "\\\\" * n,
    "numbers": lambda n: "1 " * n + "x",
    "open-parens-code": lambda n: "```python\n" + "x = (\n" * n,
}
REPLY_BASE = 2_000


def _best(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def _read_reply(reply: str) -> None:
    for kind in VERIFIER_KINDS:
        extract_answer(kind, reply)
        if kind != "mbpp":  # mbpp runs code in a sandbox: not text work
            verify(kind, reply, "5")


def _row(
    name: str,
    unit: Callable[[int], str],
    base: int,
    read: Callable[[str], object],
    repeats: int,
) -> None:
    small, large = unit(base), unit(4 * base)
    t_small = _best(lambda: read(small), repeats)
    t_large = _best(lambda: read(large), repeats)
    print(
        f"{name:18s} {len(small):>9,} chars {1000 * t_small:9.1f} ms   "
        f"{len(large):>9,} chars {1000 * t_large:9.1f} ms   "
        f"ratio {t_large / t_small:5.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("router replies, parse_tool_calls:")
    for name, unit in PARSER.items():
        base = PARSER_CHARS // len(unit(1))
        _row(name, unit, base, parse_tool_calls, args.repeats)
    print(f"model replies, extract_answer and verify for {', '.join(VERIFIER_KINDS)}:")
    for name, unit in REPLIES.items():
        _row(name, unit, REPLY_BASE, _read_reply, args.repeats)


if __name__ == "__main__":
    main()
