"""Fuzz every registered component's typed constructor parameters (ablate.spec.params): any value gives
either an instance or a one-line ConfigError naming the component's parameter, never another error."""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ablate
from ablate.errors import ConfigError
from ablate.spec.params import Checked, ParamError, _model_of

PACKAGES = ("upge", "objectives", "pipeline", "critic", "rollout", "tasks")
SKIP = {"VLLMEngine"}  # needs a GPU and vllm before it looks at a parameter (a ConfigError of its own)


def _classes() -> list[type]:
    for pkg in PACKAGES:
        mod = importlib.import_module(f"ablate.{pkg}")
        for info in pkgutil.walk_packages(mod.__path__, f"ablate.{pkg}."):
            importlib.import_module(info.name)
    out, todo = {}, [Checked]
    while todo:
        c = todo.pop()
        todo.extend(c.__subclasses__())
        if c.__module__.startswith("ablate.") and not c.__name__.startswith("_") and c.__name__ not in SKIP:
            out[f"{c.__module__}.{c.__qualname__}"] = c
    return [c for _, c in sorted(out.items()) if _fuzzable(c)]


def _fuzzable(cls: type) -> bool:
    """Built with defaults alone, and has typed parameters."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    required = [p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    init = cls.__dict__.get("__init__") or cls.__init__
    return not required and _model_of(getattr(init, "__wrapped__", init)) is not None


CLASSES = _classes()

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.sampled_from([0, 1, 2, 10**9, -(10**9)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 0.5, 1.0, 1e-12, -0.0]),
    st.text(max_size=8), st.sampled_from(["none", "token-mean", "k3", "raw", "1e-3", "all", "policy"]),
    st.lists(st.integers(0, 3), max_size=2))


def test_every_family_has_fuzzable_components():
    families = {c.__module__.split(".")[1] for c in CLASSES}
    assert set(PACKAGES) <= families, families
    assert len(CLASSES) > 60


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_parameter_is_one_config_line_naming_it(cls, data):
    init = cls.__dict__.get("__init__") or cls.__init__
    names = sorted(_model_of(getattr(init, "__wrapped__", init)).model_fields)
    name = data.draw(st.sampled_from(names))
    value = data.draw(VALUES)
    try:
        cls(**{name: value})
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and msg
        if isinstance(e, ParamError):
            # this component's parameter, or the same parameter of a part it builds from it
            assert "allowed" in msg and (msg.startswith(f"{cls.__name__}.") or f".{name}:" in msg), msg
        else:  # a task's own check of a file or budget: names a parameter in its words
            assert "task." in msg or name in msg, msg
    else:
        if isinstance(value, float) and math.isnan(value):
            pytest.fail(f"{cls.__name__}({name}=nan) accepted")
        if isinstance(value, bool):  # a bool is not a number
            assert _is_bool(cls, name), f"{cls.__name__}({name}={value}) accepted"
        if isinstance(value, str):  # a string is not coerced to a number
            assert "str" in _annotation(cls, name) or "Literal" in _annotation(cls, name), \
                f"{cls.__name__}({name}={value!r}) accepted"


def _annotation(cls: type, name: str) -> str:
    init = cls.__dict__.get("__init__") or cls.__init__
    return str(_model_of(getattr(init, "__wrapped__", init)).model_fields[name].annotation)


def _is_bool(cls: type, name: str) -> bool:
    return "bool" in _annotation(cls, name)


def test_params_module_is_the_one_checker():
    """The retired helpers are gone from ablate/ (one validation idiom)."""
    text = "".join(p.read_text() for p in Path(ablate.__path__[0]).rglob("*.py"))
    for old in ("def check_number", "def check_choice", "def _check_aggregation", "def _positive(",
                "def _nonneg(", "def _in_unit(", "def _int_at_least("):
        assert old not in text, old
