"""The one translator from a pydantic ``ValidationError`` to a one-line ``ConfigError``: '<field>: got
<value>; allowed: <what>', the allowed values read off the field's type and bounds. The run
config (ablate.schema), the search space and the components' typed parameters (ablate.spec.params)
all report through it.
"""

from __future__ import annotations

import math
import typing
from typing import Annotated, Any, Literal, Mapping, Optional, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError

from ablate.errors import ConfigError


class FieldError(ValueError):
    """A cross-field check's failure, carried through pydantic to a one-line ConfigError."""

    def __init__(self, loc: tuple, value: Any, allowed: str):
        super().__init__(allowed)
        self.loc, self.value, self.allowed = loc, value, allowed


class Problem(ValueError):
    """A check's failure in its own words, raised inside a pydantic validator: the one-line error
    is '<field>: <text>', the field being where pydantic met it plus ``loc`` below that."""

    def __init__(self, text: str, loc: tuple = ()):
        super().__init__(text)
        self.text, self.loc = text, tuple(loc)


def _describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:  # a ranged alias inside a union (Optional[Prob])
        bounds = _describe_bounds(list(args[1:]))
        return f"{_describe_type(args[0])} {bounds}".rstrip()
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is Union:
        parts = [a for a in args if a is not type(None)]
        inner = " or ".join(_describe_type(a) for a in parts)
        return ("null or " + inner) if len(parts) < len(args) else inner
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin in (list, tuple):
        return "a list of " + (_describe_type(args[0]).replace("an ", "").replace("a ", "") + "s"
                               if args else "values")
    if origin is dict or tp is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _describe_bounds(metadata: list) -> str:
    from annotated_types import MaxLen, MinLen

    lens = {type(m): m for m in metadata if isinstance(m, (MinLen, MaxLen))}
    if MinLen in lens and MaxLen in lens and lens[MinLen].min_length == lens[MaxLen].max_length:
        return f"of length {lens[MinLen].min_length}"
    out = []
    for m in metadata:
        for cls, op in ((Ge, ">="), (Gt, ">"), (Le, "<="), (Lt, "<")):
            if isinstance(m, cls):
                out.append(f"{op} {getattr(m, cls.__name__.lower())}")
    return " and ".join(out)


def allowed_of(model: type[BaseModel], name: str) -> str:
    """What field ``name`` of ``model`` accepts, in words: 'an integer >= 1', 'null or a number > 0'."""
    f = model.model_fields[name]
    text = _describe_type(f.annotation)
    bounds = _describe_bounds(f.metadata)
    if bounds:
        text = f"{text} {bounds}"
    return text


def _walk(model: type[BaseModel], loc: tuple) -> tuple[Optional[type[BaseModel]], Optional[str]]:
    """The (model, field name) that ``loc`` ends in, following nested schema models."""
    names = [p for p in loc if isinstance(p, str)]
    cur: Optional[type[BaseModel]] = model
    for i, part in enumerate(names):
        if cur is None:
            return None, None
        key = next((k for k, f in cur.model_fields.items() if k == part or f.alias == part), None)
        if key is None:
            return cur, None
        if i == len(names) - 1:
            return cur, key
        ann = cur.model_fields[key].annotation
        cur = next((c for c in (ann, *typing.get_args(ann))
                    if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return None, None


def _path(loc: tuple) -> str:
    """('train', 'betas', 1) → 'train.betas[1]'."""
    out = ""
    for x in loc:
        out += f"[{x}]" if isinstance(x, int) else (f".{x}" if out else str(x))
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def config_error(e: ValidationError, root: type[BaseModel], prefix: str = "",
                 name: str = "config") -> ConfigError:
    """The first error of ``e`` as one line: '<field>: got <value>; allowed: <what>' (a
    :class:`Problem` keeps its own words; a ConfigError raised by a validator is passed on as is;
    ``name`` names the whole input where the problem is at its top level)."""
    err = e.errors(include_url=False)[0]
    loc = tuple(err.get("loc", ()))
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, ConfigError):
        return inner
    if isinstance(inner, Problem):
        where = _path(tuple(x for x in loc if isinstance(x, str)) + inner.loc)
        return ConfigError(f"{prefix + where if where else prefix.rstrip('.') or name}: {inner.text}")
    if isinstance(inner, FieldError):
        loc = tuple(x for x in loc if isinstance(x, str)) + inner.loc
        field = prefix + _path(loc)
        return ConfigError(f"{field}: got {fmt(inner.value)}; allowed: {inner.allowed}")
    field = prefix + _path(loc) if loc else prefix.rstrip(".") or "config"
    value = err.get("input")
    kind = err.get("type", "")
    model, name = _walk(root, loc)
    if kind == "extra_forbidden" and model is not None:
        parent = (prefix + ".".join(str(x) for x in loc[:-1])).rstrip(".")
        allowed = ", ".join(f.alias or k for k, f in model.model_fields.items())
        return ConfigError(f"{parent or 'config'}: unknown key {str(loc[-1])!r}; allowed: {allowed}")
    if kind == "missing":
        what = allowed_of(model, name) if model is not None and name else "a value"
        return ConfigError(f"{field}: required value is missing; allowed: {what}")
    if model is not None and name is not None and name in model.model_fields:
        what = allowed_of(model, name)
        if isinstance(loc[-1], int):
            what = f"{what} (item {loc[-1]})"
    else:
        what = err.get("msg", "a valid value")
    return ConfigError(f"{field}: got {fmt(value)}; allowed: {what}")


def check(model: type[BaseModel], data: Any, prefix: str = "", name: str = "config") -> BaseModel:
    """``model.model_validate(data)`` with a one-line ConfigError for the first problem."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or name}: got {fmt(data)}; allowed: a mapping")
    try:
        return model.model_validate(dict(data))
    except ValidationError as e:
        raise config_error(e, model, prefix, name) from None
