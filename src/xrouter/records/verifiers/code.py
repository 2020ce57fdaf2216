"""MBPP: pull the Python solution out of a reply and run it against assert tests.

Code is taken from ``[PYTHON]...[/PYTHON]`` tags, else from Markdown fences (every
block that parses and defines something), else from the reply itself or its longest
parseable tail starting at ``def``/``import``. Only the solution part runs: imports,
definitions and simple top-level assignments are kept, while example usage (prints,
``input()``, ``if __name__ == "__main__":`` blocks, calls of the solution itself) is
dropped, since it can fail or block for reasons the tests do not ask about.

Name mismatch: the tests call one function (``is_not_prime``); a reply to a prompt
without a signature may name it differently (``identify_non_prime_numbers``). With
``rebind=True`` the tested name is bound to the reply's function when that choice is
unambiguous: the only top-level function no other one calls, or else the only one
whose positional arity matches the tests' calls; extra trailing arguments the
function does not take (MBPP's habit of passing ``len(arr)`` too) are dropped.
Otherwise the name stays missing and the tests fail.
"""

from __future__ import annotations

import ast
import builtins
import re
import warnings

__all__ = ["bind_tested_name", "extract_code", "parse_tests", "solution_only"]

_TAGGED = re.compile(r"\[PYTHON\](.*?)\[/PYTHON\]", re.DOTALL)
_FENCED = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(?:def |class |import |from \w)", re.MULTILINE)
_BUILTINS = frozenset(dir(builtins))
_RUNS_ON_IMPORT = frozenset({"input", "print", "open", "exit", "quit"})
_MAX_CODE = 100_000
_MAX_TRIMS = 40  # lines dropped from the end at most, to bound the parse attempts


def extract_code(response: str) -> str | None:
    """The solution code of a reply, or None if it holds no parseable code."""
    tagged = [b for b in _TAGGED.findall(response) if _parses(b)]
    if tagged:
        return "\n\n".join(b.strip("\n") for b in tagged)
    heads = [
        _parseable_head(body)
        for lang, body in _FENCED.findall(response)
        if lang.lower() in ("", "python", "py", "python3")
    ]
    fenced = [body for body in heads if body]
    defining = [b for b in fenced if _CODE_START.search(b)]
    if defining or fenced:
        return "\n\n".join(b.strip("\n") for b in (defining or fenced[:1]))
    if _parses(response) and _CODE_START.search(response):
        return response.strip("\n")
    return _bare_tail(response)


def _bare_tail(response: str) -> str | None:
    start = _CODE_START.search(response)
    return None if start is None else _parseable_head(response[start.start() :])


def _parseable_head(code: str) -> str | None:
    """The longest run of leading lines that parses: drops trailing prose and
    the cut-off last lines of a truncated reply."""
    if _parses(code):
        return code
    lines = code.splitlines()
    for end in range(len(lines) - 1, max(0, len(lines) - _MAX_TRIMS), -1):
        candidate = "\n".join(lines[:end])
        if _parses(candidate):
            return candidate
    return None


def _parses(code: str) -> bool:
    return _tree(code) is not None


def _tree(code: str) -> ast.Module | None:
    if not code.strip() or len(code) > _MAX_CODE:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def solution_only(code: str) -> str:
    """``code`` without its example usage: only imports, definitions, constants."""
    tree = _tree(code)
    if tree is None:
        return code
    own = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    lines = code.splitlines()
    kept: list[str] = []
    for node in tree.body:
        if _is_solution(node, own):
            first = min([node.lineno] + [d.lineno for d in _decorators(node)])
            kept.append("\n".join(lines[first - 1 : node.end_lineno]))
    return "\n".join(kept) + "\n"


def _decorators(node: ast.stmt) -> list[ast.expr]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node.decorator_list
    return []


def _is_solution(node: ast.stmt, own: set[str]) -> bool:
    if isinstance(
        node,
        ast.Import
        | ast.ImportFrom
        | ast.FunctionDef
        | ast.AsyncFunctionDef
        | ast.ClassDef,
    ):
        return True
    if isinstance(node, ast.Assign | ast.AnnAssign):
        called = {
            n.func.id
            for n in ast.walk(node)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        return not called & (own | _RUNS_ON_IMPORT)
    return False


def parse_tests(tests: str | list[str]) -> list[str]:
    """Test statements from a list, a JSON/Python list literal, lines of asserts, or
    a HumanEval ``def check(candidate)`` block (then run as ``check(candidate)``)."""
    if isinstance(tests, list):
        return [str(t) for t in tests if str(t).strip()]
    text = tests.strip()
    if re.search(r"^def check\(candidate\)", text, re.MULTILINE):
        return [text, "check(candidate)"]
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if isinstance(value, list):
            return [str(t) for t in value if str(t).strip()]
    return [line for line in text.splitlines() if line.strip()]


def bind_tested_name(code: str, tests: list[str]) -> str:
    """``code`` plus ``tested = chosen`` when the tests call a name it lacks."""
    tree = _tree(code)
    if tree is None:
        return code
    # a redefinition (a reply repeating its function) replaces the earlier one
    latest = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    functions = list(latest.values())
    defined = {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)
    }
    defined |= {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    calls, own = _tested_calls(tests)
    missing = {n for n in calls if n not in defined | own and n not in _BUILTINS}
    if len(missing) != 1 or not functions:
        return code
    name = missing.pop()
    chosen = _choose(functions, calls[name])
    if chosen is None:
        return code
    return f"{code}\n{_binding(name, chosen, max(calls[name], default=0))}\n"


def _binding(name: str, function: ast.FunctionDef, used: int) -> str:
    """``name = function``, dropping trailing arguments it does not take: MBPP
    tests often pass a list's length too (``f(arr, n)``) where ``f(arr)`` needs
    only the list."""
    args = function.args
    takes = len(args.posonlyargs) + len(args.args)
    if args.vararg is not None or used <= takes:
        return f"{name} = {function.name}"
    return (
        f"def {name}(*args, **kwargs):\n"
        f"    return {function.name}(*args[:{takes}], **kwargs)"
    )


def _tested_calls(tests: list[str]) -> tuple[dict[str, set[int]], set[str]]:
    """Each function name the tests call, with the argument counts used, and the
    names the tests define themselves (HumanEval's ``check``)."""
    calls: dict[str, set[int]] = {}
    own: set[str] = set()
    for test in tests:
        tree = _tree(test)
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                calls.setdefault(node.func.id, set()).add(len(node.args))
            elif isinstance(node, ast.FunctionDef):
                own.add(node.name)
    return calls, own


def _choose(
    functions: list[ast.FunctionDef], arities: set[int]
) -> ast.FunctionDef | None:
    called = {
        n.func.id
        for f in functions
        for n in ast.walk(f)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id != f.name
    }
    roots = [f for f in functions if f.name not in called]
    if len(roots) == 1:
        return roots[0]
    fitting = [f for f in roots or functions if _accepts(f, arities)]
    return fitting[0] if len(fitting) == 1 else None


def _accepts(function: ast.FunctionDef, arities: set[int]) -> bool:
    args = function.args
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    return all(
        (required <= n <= positional) or args.vararg is not None for n in arities
    )
