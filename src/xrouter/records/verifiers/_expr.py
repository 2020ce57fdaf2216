"""Evaluate small arithmetic and LaTeX expressions, exactly where possible.

``\\frac{3\\sqrt{6}}{\\sqrt{150}}``, ``2^{10}``, ``(4 + 20) / 4`` and ``3x + 1`` (with
values for the variables) become numbers: a ``Fraction`` while the arithmetic stays
rational, else a ``complex``. The parser is a whitelist walk over Python's ``ast``,
never ``eval``, and every input is size-guarded so nothing can hang: long inputs,
deep nesting and huge powers are refused (``None``) rather than computed.
"""

from __future__ import annotations

import ast
import cmath
import math
import re
import warnings
from collections.abc import Callable, Mapping
from fractions import Fraction

__all__ = ["MAX_CHARS", "Value", "close", "evaluate", "to_python"]

Value = Fraction | complex
MAX_CHARS = 300  # longer answers are prose, not expressions worth evaluating
_MAX_BITS = 20_000  # bound on exact powers (2^{2011} fits, 10^{10^6} does not)

_FUNCS: dict[str, Callable[[complex], complex]] = {
    "sqrt": cmath.sqrt,
    "ln": cmath.log,
    "log": cmath.log,
    "exp": cmath.exp,
    "sin": cmath.sin,
    "cos": cmath.cos,
    "tan": cmath.tan,
}
_CONSTS: dict[str, Value] = {"pi": complex(math.pi), "e": complex(math.e), "i": 1j}
_COMMANDS = {
    "pi": " pi ",
    "cdot": "*",
    "times": "*",
    "div": "/",
    "ln": " ln ",
    "log": " log ",
    "sin": " sin ",
    "cos": " cos ",
    "tan": " tan ",
    "exp": " exp ",
}
_DROP = {"left", "right", "displaystyle", "bigl", "bigr", "Bigl", "Bigr", ",", "!"}
_UNWRAP = {"text", "mathrm", "mbox", "operatorname", "textbf", "mathbf"}
_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*|\.\d+)|([A-Za-z]+)|(\*\*|[-+*/()]))")


class _RefusedError(ValueError):
    """The expression is outside what this evaluator accepts."""


def to_python(text: str) -> str | None:
    """The expression as Python source with explicit ``*``, or None if unsupported."""
    if len(text) > MAX_CHARS:
        return None
    try:
        plain = _plain(text.replace("\u221a", "\\sqrt").replace("\u03c0", "\\pi"))
        return _with_products(plain)
    except _RefusedError:
        return None


def evaluate(text: str, variables: Mapping[str, complex] | None = None) -> Value | None:
    """The value of ``text``, or None if it is not a supported expression."""
    source = to_python(text)
    if source is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval")
        return _eval(tree.body, variables or {})
    except (
        _RefusedError,
        SyntaxError,
        ZeroDivisionError,
        OverflowError,
        ValueError,
        TypeError,
        RecursionError,
        MemoryError,
    ):
        return None


def close(a: Value, b: Value) -> bool:
    """Exact equality for two fractions, relative 1e-9 otherwise."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    return cmath.isclose(complex(a), complex(b), rel_tol=1e-9, abs_tol=1e-12)


def _plain(s: str) -> str:
    """LaTeX -> plain infix (``\\frac{a}{b}`` -> ``((a)/(b))``, ``^`` -> ``**``)."""
    out: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            m = re.match(r"\\([A-Za-z]+|.)", s[i:])
            name = m.group(1) if m else ""
            i += 1 + len(name)
            i = _command(s, i, name, out)
        elif ch == "{":
            inner, i = _group(s, i)
            out.append(f"({inner})")
        elif ch == "}":
            raise _RefusedError("unbalanced brace")
        elif ch == "^":
            # "2^10" in plain text means 2^{10}, though LaTeX would read 2^{1}0
            digits = re.match(r"\s*-?\d+(?:\.\d+)?", s[i + 1 :])
            if digits:
                inner, i = digits.group(), i + 1 + len(digits.group())
            else:
                inner, i = _group(s, i + 1)
            out.append(f"**({inner})")
        elif ch in "[]":
            out.append("()"[ch == "]"])
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _command(s: str, i: int, name: str, out: list[str]) -> int:
    if name in ("frac", "dfrac", "tfrac"):
        top, i = _group(s, i)
        bottom, i = _group(s, i)
        out.append(f"(({top})/({bottom}))")
    elif name == "sqrt":
        root = ""
        if s[i : i + 1] == "[":
            end = s.find("]", i)
            if end < 0:
                raise _RefusedError("unclosed root index")
            root, i = _plain(s[i + 1 : end]), end + 1
        inner, i = _group(s, i)
        out.append(f"(({inner})**(1/({root})))" if root else f"sqrt({inner})")
    elif name in _UNWRAP:
        inner, i = _group(s, i)
        out.append(inner)
    elif name in _COMMANDS:
        out.append(_COMMANDS[name])
    elif name not in _DROP and name != " ":
        raise _RefusedError(f"unsupported command \\{name}")
    return i


def _group(s: str, i: int) -> tuple[str, int]:
    """One argument: a braced group or a single character, as plain text."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise _RefusedError("missing argument")
    if s[i] != "{":
        if s[i] == "\\":
            m = re.match(r"\\[A-Za-z]+", s[i:])
            if m:
                return _plain(m.group()), i + len(m.group())
        return s[i], i + 1
    depth, j = 0, i
    while j < len(s):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return _plain(s[i + 1 : j]), j + 1
        j += 1
    raise _RefusedError("unclosed brace")


def _with_products(plain: str) -> str:
    """Tokenise and insert the ``*`` that math leaves implicit (``2\\sqrt3``)."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    plain = plain.rstrip()
    while pos < len(plain):
        m = _TOKEN.match(plain, pos)
        if m is None or m.end() == pos:
            raise _RefusedError(f"unexpected {plain[pos : pos + 10]!r}")
        pos = m.end()
        number, word, op = m.groups()
        if word is not None:
            tokens.extend(_split_word(word))
        else:
            tokens.append(("num", number) if number is not None else ("op", op))
    out: list[str] = []
    for k, (kind, text) in enumerate(tokens):
        if k and _implicit_product(tokens[k - 1], (kind, text)):
            out.append("*")
        out.append(text)
    return " ".join(out)


def _split_word(word: str) -> list[tuple[str, str]]:
    if word in _FUNCS or word in _CONSTS:
        return [("func" if word in _FUNCS else "name", word)]
    return [("name", letter) for letter in word]  # "xy" is x times y


def _implicit_product(left: tuple[str, str], right: tuple[str, str]) -> bool:
    left_ends = left[0] in ("num", "name") or left[1] == ")"
    right_starts = right[0] in ("num", "name", "func") or right[1] == "("
    return left_ends and right_starts and not (left[0] == right[0] == "num")


def _eval(node: ast.expr, env: Mapping[str, complex]) -> Value:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return Fraction(repr(node.value))
    if isinstance(node, ast.Name):
        if node.id in env:
            return complex(env[node.id])
        if node.id in _CONSTS:
            return _CONSTS[node.id]
        raise _RefusedError(f"unknown name {node.id}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return _binop(node.op, _eval(node.left, env), _eval(node.right, env))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and len(node.args) == 1
    ):
        return _call(node.func.id, _eval(node.args[0], env))
    raise _RefusedError(type(node).__name__)


def _binop(op: ast.operator, a: Value, b: Value) -> Value:
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if isinstance(op, ast.Div):
        return a / b
    if isinstance(op, ast.Pow):
        return _power(a, b)
    raise _RefusedError(type(op).__name__)


def _power(base: Value, exp: Value) -> Value:
    if isinstance(base, Fraction) and isinstance(exp, Fraction):
        if exp.denominator == 1:
            size = max(base.numerator.bit_length(), base.denominator.bit_length())
            if abs(exp.numerator) * max(size, 1) > _MAX_BITS:
                raise _RefusedError("power too large")
            return base**exp.numerator
        root = _exact_root(base, exp.denominator)
        if root is not None:
            return _power(root, Fraction(exp.numerator))
    if abs(complex(exp)) > 10_000:
        raise _RefusedError("exponent too large")
    return complex(base) ** complex(exp)


def _exact_root(value: Fraction, n: int) -> Fraction | None:
    """The rational n-th root of ``value`` if there is one (``sqrt{4/9}`` = 2/3)."""
    if value < 0 or n > 64 or value.numerator.bit_length() > 1000:
        return None
    roots = []
    for part in (value.numerator, value.denominator):
        root = math.isqrt(part) if n == 2 else round(part ** (1 / n))
        if root**n != part:
            return None
        roots.append(root)
    return Fraction(roots[0], roots[1])


def _call(name: str, arg: Value) -> Value:
    if name == "sqrt" and isinstance(arg, Fraction):
        root = _exact_root(arg, 2)
        if root is not None:
            return root
    return _FUNCS[name](complex(arg))
