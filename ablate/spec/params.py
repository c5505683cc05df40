"""Typed, ranged constructor parameters: the one way a component checks what it is given.

A component (a ``Checked`` subclass: every ``Component``, ``Task`` and ``Aggregation``) declares
its parameters' types with the aliases below (``eps: Prob``, ``k: PosInt``,
``mode: Literal["a", "b"]``); the class's ``__init__`` is wrapped once, when the class is made,
so that each call validates the scalar-typed arguments given (strictly: a bool is not a number, a
string is not coerced, NaN is refused) with pydantic before the body runs. The first problem is one
line, '<Class>.<param>: got <value>; allowed: <what>', from the one translator
(:func:`ablate.spec.translate.config_error`). Parameters of other types (components, tensors,
lists) pass through unchecked. Validation runs at construction only; nothing is added to calls made later.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from typing import Annotated, Any, Callable, Literal, Optional, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import (AfterValidator, AllowInfNan, BaseModel, ConfigDict, Strict, ValidationError,
                      create_model)

from ablate.errors import ConfigError, choice_text
from ablate.spec.translate import config_error, fmt

__all__ = ["Checked", "ParamError", "Num", "Prob", "OpenProb", "Frac", "PosFrac", "Positive", "NonNeg",
           "Finite", "Int", "PosInt", "NonNegInt", "Ge", "Gt", "Le", "Lt", "require"]


def _not_nan(v: float) -> float:
    if math.isnan(v):
        raise ValueError("a number, not NaN")
    return v


# a real number (an int is taken as one; a bool, a string or NaN is not; ±inf is unless a bound says)
Num = Annotated[float, Strict(), AfterValidator(_not_nan)]
Prob = Annotated[Num, Ge(0), Le(1)]
OpenProb = Annotated[Num, Gt(0), Lt(1)]
Positive = Annotated[Num, Gt(0)]
NonNeg = Annotated[Num, Ge(0)]
Frac = Annotated[Num, Ge(0), Lt(1)]  # a clip ε, a fraction that must leave something
PosFrac = Annotated[Num, Gt(0), Le(1)]  # a share that must keep something
Finite = Annotated[float, Strict(), AllowInfNan(False)]  # where ±inf is as meaningless as NaN
Int = Annotated[int, Strict()]  # an integer (not a bool, not 2.0)
PosInt = Annotated[Int, Ge(1)]
NonNegInt = Annotated[Int, Ge(0)]


class ParamError(ConfigError):
    """A constructor parameter's problem, '<Class>.<param>: <detail>'; the registry names the config
    field instead, '<field>.<param>: <detail> (<Class>.<param>)'."""

    def __init__(self, owner: str, param: str, detail: str):
        super().__init__(f"{owner}.{param}: {detail}")
        self.owner, self.param, self.detail = owner, param, detail

    def at(self, field: str) -> ConfigError:
        return ConfigError(f"{field}.{self.param}: {self.detail} ({self.owner}.{self.param})")


_CONFIG = ConfigDict(strict=True, arbitrary_types_allowed=True)
_SCALARS = (bool, int, float, str, type(None))


def _checkable(tp: Any) -> bool:
    """Scalars, literals and ranged aliases (and unions of them) are checked; containers,
    components and tensors are the constructor's own business."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _checkable(typing.get_args(tp)[0])
    if origin is Literal:
        return True
    if origin is Union:
        return all(_checkable(a) for a in typing.get_args(tp))
    return tp in _SCALARS


@functools.lru_cache(maxsize=None)
def _model_of(init: Callable) -> Optional[type[BaseModel]]:
    """The pydantic model of ``init``'s checked parameters (None when it has none)."""
    hints = inspect.get_annotations(init, eval_str=True)  # `from __future__ import annotations`
    fields: dict[str, Any] = {}
    for name, p in list(inspect.signature(init).parameters.items())[1:]:
        ann = hints.get(name, p.empty)
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or not _checkable(ann):
            continue
        fields[name] = (ann, ... if p.default is p.empty else p.default)
    if not fields:
        return None
    return create_model(f"{init.__qualname__}.params", __config__=_CONFIG, **fields)


def _literal_values(tp: Any) -> list:
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return [x for a in typing.get_args(tp) for x in _literal_values(a)]


def param_error(owner: str, e: ValidationError, model: type[BaseModel]) -> ParamError:
    """The first problem of ``e`` as one line naming ``owner.param``, the value and what is allowed
    (a choice in the words of :func:`ablate.errors.choice_error`)."""
    err = e.errors(include_url=False)[0]
    name = str(err["loc"][0])
    if err.get("type") == "literal_error":
        allowed = _literal_values(model.model_fields[name].annotation)
        return ParamError(owner, name, choice_text(err.get("input"), allowed))
    text = str(config_error(e, model, prefix=f"{owner}."))
    return ParamError(owner, name, text.split(": ", 1)[1])


def _checked(init: Callable) -> Callable:
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        model = _model_of(init)
        if model is None:
            return init(self, *args, **kwargs)
        bound = sig.bind(self, *args, **kwargs)
        given = {k: v for k, v in bound.arguments.items() if k in model.model_fields}
        try:
            valid = model.model_validate(given)
        except ValidationError as e:
            raise param_error(type(self).__name__, e, model) from None
        bound.arguments.update({k: getattr(valid, k) for k in given})
        return init(*bound.args, **bound.kwargs)

    wrapper.__checked__ = True  # type: ignore[attr-defined]
    return wrapper


class Checked:
    """Base whose subclasses' constructors validate their typed parameters (see the module doc)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "__checked__", False):
            cls.__init__ = _checked(init)  # type: ignore[method-assign]


def require(ok: bool, owner: object, name: str, value: Any, allowed: str) -> None:
    """A cross-parameter check (``low <= high``), in the words and error type of the typed ones."""
    if not ok:
        raise ParamError(type(owner).__name__, name, f"got {fmt(value)}; allowed: {allowed}")
