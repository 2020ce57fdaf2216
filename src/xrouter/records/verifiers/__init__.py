"""xrouter's own answer checkers: is a recorded response right?

Five kinds of verifier, each a pure function of (response, gold):

- ``gsm8k``: one number (``# 18``, ``$1,000``, ``18.00``), compared exactly;
- ``math``: a LaTeX answer, compared as normalised text and then as a value;
- ``cruxeval``: a Python literal, compared with ``==`` as CRUXEval's harness does;
- ``choice``: a multiple-choice letter A-E (or the option's text);
- ``mbpp``: Python code, run against ``assert`` tests in a sandboxed process.

``extract_answer`` gives the normalised final answer (for telling whether two models
agree); ``verify`` judges it against the gold. The final answer is the last one a
reply states (a reply that corrects its first JSON object is judged on the
correction) and the whole of it (``6 + 5 + 10 + 8 = 29`` answers 29), which is
where these verdicts differ from ZeroEval's first-number checker.

ZeroEval's task names (``gsm``, ``math-l5``, ``crux``) are accepted as aliases.
Reply parsing is cached for the last few thousand responses, so ``verify`` followed
by ``extract_answer`` on the same response parses it once.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import lru_cache

from xrouter.core.errors import UnknownTaskError
from xrouter.records.verifiers.choice import extract_choice, verify_choice
from xrouter.records.verifiers.code import (
    bind_tested_name,
    extract_code,
    parse_tests,
    solution_only,
)
from xrouter.records.verifiers.crux import canonical_crux, crux_matches, extract_crux
from xrouter.records.verifiers.latex import canonical_math, equivalent, extract_math
from xrouter.records.verifiers.numeric import (
    canonical_number,
    extract_number,
    parse_gold,
)
from xrouter.records.verifiers.sandbox import run_tests

__all__ = [
    "KIND_ALIASES",
    "VERIFIER_KINDS",
    "extract_answer",
    "prepare_solution",
    "verify",
    "verify_code",
    "verify_many",
]

VERIFIER_KINDS: tuple[str, ...] = ("gsm8k", "math", "cruxeval", "choice", "mbpp")
KIND_ALIASES: dict[str, str] = {
    "gsm": "gsm8k",
    "math-l5": "math",
    "crux": "cruxeval",
    "code": "mbpp",
}


def _kind(kind: str) -> str:
    resolved = KIND_ALIASES.get(kind, kind)
    if resolved not in VERIFIER_KINDS:
        raise UnknownTaskError(
            f"unknown verifier kind {kind!r}; known kinds: "
            f"{', '.join(VERIFIER_KINDS)} (aliases: {', '.join(KIND_ALIASES)})"
        )
    return resolved


@lru_cache(maxsize=4096)
def _extracted(kind: str, response: str) -> Fraction | str | None:
    if kind == "gsm8k":
        return extract_number(response)
    if kind == "math":
        return extract_math(response)
    if kind == "cruxeval":
        return extract_crux(response)
    if kind == "choice":
        return extract_choice(response)
    return extract_code(response)


def extract_answer(kind: str, response: str) -> str | None:
    """The response's final answer as a normalised string, or None if it has none.

    Two responses with equal results give the same answer (``0.5`` and
    ``\\frac{1}{2}``, ``[1,2]`` and ``[1, 2]``); for ``mbpp`` it is the solution code.
    """
    kind = _kind(kind)
    found = _extracted(kind, response or "")
    if found is None:
        return None
    if isinstance(found, Fraction):
        return canonical_number(found)
    if kind == "math":
        return canonical_math(found)
    if kind == "cruxeval":
        return canonical_crux(found)
    if kind == "mbpp":
        return solution_only(found).strip() or None
    return found


def verify(kind: str, response: str, gold: str) -> bool:
    """True if the response's final answer matches ``gold``.

    ``gold`` is the task's gold answer as text; for ``mbpp`` it is the tests (a
    JSON or Python list of ``assert`` lines, or one assert per line).
    """
    kind = _kind(kind)
    if not response or not gold:
        return False
    if kind == "mbpp":
        return verify_code(response, parse_tests(gold))
    if kind == "choice":
        return verify_choice(response, gold)
    found = _extracted(kind, response)
    if found is None:
        return False
    if isinstance(found, Fraction):
        return found == parse_gold(gold)
    if kind == "math":
        return equivalent(found, gold)
    return crux_matches(found, gold)


def verify_code(
    response: str,
    tests: list[str],
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    rebind: bool = True,
) -> bool:
    """True if the response's Python code passes every ``assert`` in ``tests``.

    The code runs in a separate, limited process (see ``sandbox``). With ``rebind``
    a differently named solution is bound to the tested name when unambiguous (see
    ``code``). Raises ``SandboxError`` only if the sandbox itself cannot start.
    """
    solution = prepare_solution(response, tests, rebind=rebind)
    if solution is None:
        return False
    result = run_tests(solution, tests, timeout_s=timeout_s, memory_mb=memory_mb)
    return result.passed


def prepare_solution(
    response: str, tests: list[str], *, rebind: bool = True
) -> str | None:
    """The code ``verify_code`` would run for ``response``, or None if it has none.

    Parsing happens here, in the caller's thread, so that batches can run the
    sandboxes from a thread pool (the parser's warning filters are process-wide).
    """
    code = extract_code(response or "")
    if code is None or not tests:
        return None
    solution = solution_only(code)
    return bind_tested_name(solution, tests) if rebind else solution


def verify_many(
    kind: str, pairs: Iterable[tuple[str, str]], *, workers: int = 4
) -> list[bool]:
    """``verify`` over (response, gold) pairs, in order.

    ``mbpp`` pairs run ``workers`` sandboxes at a time (each is its own process);
    other kinds are fast enough to check one after another.
    """
    kind = _kind(kind)
    items = list(pairs)
    if kind != "mbpp" or workers <= 1:
        return [verify(kind, response, gold) for response, gold in items]
    jobs: list[tuple[str, list[str]] | None] = []
    for response, gold in items:
        tests = parse_tests(gold) if gold else []
        solution = prepare_solution(response, tests) if response else None
        jobs.append(None if solution is None else (solution, tests))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_run_job, jobs))


def _run_job(job: tuple[str, list[str]] | None) -> bool:
    return job is not None and run_tests(job[0], job[1]).passed
