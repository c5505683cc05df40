"""Safe arithmetic expressions: parse model output with ``ast`` (never eval), and enumerate them.

Only non-negative integer literals, binary + - * / and parentheses are accepted; everything else
(names, calls, attributes, unary minus, strings, ...) is rejected without being executed. Values are
exact ``Fraction``s.
"""

from __future__ import annotations

import ast
from fractions import Fraction
from itertools import combinations
from typing import Iterator

MAX_EXPR_CHARS = 200  # longer strings are rejected before parsing (bounds ast recursion)
MAX_LITERAL = 10**9
MAX_ABS_VALUE = 10**15

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


class ExprError(ValueError):
    """The string is not an allowed arithmetic expression."""


def parse_expr(text: str, ops: str = "+-*/") -> tuple[Fraction, list[int]]:
    """Value and the integer literals (left to right) of an arithmetic expression.

    Raises ExprError for anything outside the grammar (including operators not in ``ops``),
    division by zero, or absurdly large numbers. The string is parsed, never executed.
    """
    if not isinstance(text, str):
        raise ExprError("not a string")
    s = text.strip()
    if not s:
        raise ExprError("empty")
    if len(s) > MAX_EXPR_CHARS:
        raise ExprError("too long")
    try:
        tree = ast.parse(s, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ExprError("not an expression") from None
    numbers: list[int] = []
    try:
        value = _walk(tree.body, ops, numbers)
    except RecursionError:
        raise ExprError("too deeply nested") from None
    return value, numbers


def _walk(node: ast.AST, ops: str, numbers: list[int]) -> Fraction:
    if isinstance(node, ast.Constant):
        v = node.value
        if type(v) is not int or v < 0 or v > MAX_LITERAL:
            raise ExprError(f"literal {v!r} not allowed")
        numbers.append(v)
        return Fraction(v)
    if isinstance(node, ast.BinOp):
        sym = _OPS.get(type(node.op))
        if sym is None or sym not in ops:
            raise ExprError(f"operator {type(node.op).__name__} not allowed")
        a = _walk(node.left, ops, numbers)
        b = _walk(node.right, ops, numbers)
        out = _apply(sym, a, b)
        if out is None:
            raise ExprError("division by zero")
        if abs(out) > MAX_ABS_VALUE:
            raise ExprError("value too large")
        return out
    raise ExprError(f"{type(node).__name__} not allowed")


def _apply(sym: str, a: Fraction, b: Fraction) -> Fraction | None:
    if sym == "+":
        return a + b
    if sym == "-":
        return a - b
    if sym == "*":
        return a * b
    if b == 0:
        return None
    return a / b


def _wrap(child: tuple[str, str | None], parent: str, right: bool) -> str:
    text, op = child
    if op is None:
        return text
    if _PREC[op] < _PREC[parent] or (right and _PREC[op] == _PREC[parent] and parent in "-/"):
        return f"({text})"
    return text


def expressions(numbers: tuple[int, ...], ops: str) -> Iterator[tuple[Fraction, str]]:
    """Every expression using each number exactly once with binary ``ops`` (all orders and
    bracketings), as (value, minimally parenthesised text). Duplicates are possible."""
    for value, text, _ in _exprs(tuple(numbers), ops):
        yield value, text


def _exprs(nums: tuple[int, ...], ops: str) -> Iterator[tuple[Fraction, str, str | None]]:
    if len(nums) == 1:
        yield Fraction(nums[0]), str(nums[0]), None
        return
    idx = range(len(nums))
    for r in range(1, len(nums)):
        for left_idx in combinations(idx, r):
            left = tuple(nums[i] for i in left_idx)
            right = tuple(nums[i] for i in idx if i not in left_idx)
            for lv, lt, lo in _exprs(left, ops):
                for rv, rt, ro in _exprs(right, ops):
                    for sym in ops:
                        v = _apply(sym, lv, rv)
                        if v is None:
                            continue
                        text = _wrap((lt, lo), sym, False) + sym + _wrap((rt, ro), sym, True)
                        yield v, text, sym


def solve(numbers: tuple[int, ...], target: int, ops: str = "+-*") -> str | None:
    """Shortest expression using every number once that equals ``target`` (brute force)."""
    best: str | None = None
    for v, text in expressions(tuple(numbers), ops):
        if v == target and (best is None or (len(text), text) < (len(best), best)):
            best = text
    return best


def reachable(numbers: tuple[int, ...], ops: str = "+-*") -> dict[int, str]:
    """Every integer reachable from ``numbers`` → its shortest expression."""
    out: dict[int, str] = {}
    for v, text in expressions(tuple(numbers), ops):
        if v.denominator != 1:
            continue
        k = int(v)
        cur = out.get(k)
        if cur is None or (len(text), text) < (len(cur), cur):
            out[k] = text
    return out
