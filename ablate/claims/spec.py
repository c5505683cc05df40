"""The ``report:`` and ``claims:`` keys of a search space: which extra metrics the report analyses,
and published claims stated as data (two arms, a metric, an aggregation, an expected direction,
and optionally the effect of interest and an equivalence margin).

::

    report:
      metrics: [train/kl_old, train/truncated_frac]   # on top of the default set
    claims:
      - id: dapo_clip_higher_entropy
        paper: "DAPO: An Open-Source LLM Reinforcement Learning System at Scale"
        arxiv: "2503.14476"
        claim: clip-higher keeps the policy's entropy higher than symmetric clipping
        a: {mask: clip_higher}            # arm a: swept axis -> option (slot, method or choice param)
        b: {mask: ppo_clip}               # arm b, the reference
        metric: train/entropy             # any logged metric, or "M1 - M2" (per-run difference)
        aggregation: mean                 # final | mean | slope | auc | last3 (over the run's values)
        expect: higher                    # a relative to b: higher | lower
        effect: 0.05                      # optional: the smallest a − b that matters (power, MDE)
        margin: 0.02                      # optional: "equivalent" when a − b is within ±margin (TOST)
        misspecified: why                 # optional: the setting cannot test the claim (verdict says so)
        notes: what was tried, caveats    # optional, shown in the report

Pure parsing and validation (pydantic, no heavy imports): ``ablate.sweep.space`` calls it while
validating.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ablate.errors import ConfigError, choice_error

AGGREGATIONS = ("final", "mean", "slope", "auc", "last3")
EXPECT = ("higher", "lower")
CLAIM_KEYS = ("id", "paper", "arxiv", "claim", "a", "b", "metric", "aggregation", "expect", "effect",
              "margin", "misspecified", "notes")
REPORT_KEYS = ("metrics",)
_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_@./-]*$")
_ARXIV_RE = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def metric_terms(metric: str) -> tuple[str, ...]:
    """``"a"`` → ("a",); ``"a - b"`` → ("a", "b"). Raises ValueError for anything else."""
    parts = [p.strip() for p in str(metric).split(" - ")]
    if len(parts) > 2 or not all(_METRIC_RE.match(p) for p in parts):
        raise ValueError(metric)
    return tuple(parts)


def _one_line(v: Any) -> str:
    if v is None or (isinstance(v, str) and not v.strip()):
        raise ValueError("missing")
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise ValueError(f"expected text, got {v!r}")
    return " ".join(str(v).split())


class Claim(BaseModel):
    """One published claim: a − b on ``metric`` (per run, aggregated) is expected ``expect``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    paper: str
    arxiv: str
    claim: str
    a: dict[str, Any]
    b: dict[str, Any]
    metric: str
    aggregation: Literal["final", "mean", "slope", "auc", "last3"] = "final"
    expect: Literal["higher", "lower"] = "higher"
    effect: Optional[float] = Field(default=None, gt=0, allow_inf_nan=False)
    margin: Optional[float] = Field(default=None, gt=0, allow_inf_nan=False)
    misspecified: str = ""
    notes: str = ""

    @field_validator("id", "paper", "arxiv", "claim", mode="before")
    @classmethod
    def _text(cls, v: Any) -> str:
        return _one_line(v)

    @field_validator("misspecified", "notes", mode="before")
    @classmethod
    def _optional_text(cls, v: Any) -> str:
        return "" if v is None or (isinstance(v, str) and not v.strip()) else _one_line(v)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"{v!r} may use only letters, digits, '_', '-' and '.'")
        return v

    @field_validator("arxiv")
    @classmethod
    def _arxiv(cls, v: str) -> str:
        if not _ARXIV_RE.match(v):
            raise ValueError(f"{v!r} is not an arXiv id like 2503.14476")
        return v

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, v: Any) -> str:
        return _metric_name(v, allow_difference=True)

    @property
    def terms(self) -> tuple[str, ...]:
        """The logged metric names the claim's metric is made of (one, or two for "M1 - M2")."""
        return metric_terms(self.metric)

    def to_dict(self) -> dict:
        d = self.model_dump()
        return {k: v for k, v in d.items()
                if not (k in ("notes", "misspecified") and not v) and not (k in ("effect", "margin") and v is None)}


class ReportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: list[str] = Field(default_factory=list)

    def to_dict(self) -> dict:
        return {"metrics": list(self.metrics)}


def _metric_name(v: Any, allow_difference: bool) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"expected a logged metric name like train/entropy, got {v!r}")
    try:
        terms = metric_terms(v)
    except ValueError:
        raise ValueError(f"{v!r} is not a metric name (like train/entropy"
                         + (' or "eval/pass@1 - eval/pass@8"' if allow_difference else "") + ")") from None
    if len(terms) > 1 and not allow_difference:
        raise ValueError(f"{v!r}: a difference of metrics is allowed only in claims")
    return " - ".join(terms)


def check_metric_name(field_: str, v: Any, allow_difference: bool = False) -> str:
    try:
        return _metric_name(v, allow_difference)
    except ValueError as e:
        raise ConfigError(f"{field_}: {e}") from None


def parse_report(v: Any) -> ReportSpec:
    if v is None:
        return ReportSpec()
    if not isinstance(v, Mapping):
        raise ConfigError(f"report: expected a mapping like {{metrics: [train/entropy]}}, got {v!r}")
    for k in v:
        if k not in REPORT_KEYS:
            raise choice_error("report: key", k, REPORT_KEYS)
    ms = v.get("metrics")
    ms = [] if ms is None else [ms] if isinstance(ms, str) else ms
    if not isinstance(ms, (list, tuple)):
        raise ConfigError(f"report.metrics: expected a list of metric names, got {ms!r}")
    out: list[str] = []
    for i, m in enumerate(ms):
        name = check_metric_name(f"report.metrics[{i}]", m)
        if name not in out:
            out.append(name)
    return ReportSpec(metrics=out)


def _arm(field_: str, v: Any, axes: Mapping[str, list]) -> dict[str, Any]:
    if not isinstance(v, Mapping) or not v:
        raise ConfigError(f"{field_}: expected a mapping of swept axis -> option, like "
                          f"{{mask: clip_higher}}, got {v!r}")
    out: dict[str, Any] = {}
    for k, val in v.items():
        k = str(k)
        if k not in axes:
            raise choice_error(f"{field_}: axis", k, list(axes) or ["(nothing swept)"])
        match = [o for o in axes[k] if o == val or str(o) == str(val)]
        if not match:
            raise choice_error(f"{field_}.{k}", val, [str(o) for o in axes[k]])
        out[k] = match[0]
    return out


_ALLOWED = {"aggregation": AGGREGATIONS, "expect": EXPECT}


def _validation_error(prefix: str, e: ValidationError) -> ConfigError:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    got = err.get("input")
    if loc in _ALLOWED:
        return choice_error(f"{prefix}.{loc}", got, _ALLOWED[loc])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return ConfigError(f"{prefix}.{loc}: {msg} (got {got!r})" if "got" not in msg else f"{prefix}.{loc}: {msg}")


def parse_claims(v: Any, axes: Mapping[str, list]) -> list[Claim]:
    """Validate ``claims:`` against the swept axes (``axis -> options``: slot groups, ``method``,
    choice params). Each arm must pick options of swept axes, and the arms must differ."""
    if v is None:
        return []
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"claims: expected a list of claims, got {type(v).__name__}")
    out: list[Claim] = []
    seen: set[str] = set()
    for i, c in enumerate(v):
        f = f"claims[{i}]"
        if not isinstance(c, Mapping):
            raise ConfigError(f"{f}: expected a mapping with {', '.join(CLAIM_KEYS)}")
        for k in c:
            if k not in CLAIM_KEYS:
                raise choice_error(f"{f}: key", k, CLAIM_KEYS)
        raw_id = c.get("id")
        f = f"claims.{raw_id}" if isinstance(raw_id, str) and _ID_RE.match(raw_id.strip()) else f
        data = {k: c[k] for k in c}
        data["a"] = _arm(f"{f}.a", c.get("a"), axes)
        data["b"] = _arm(f"{f}.b", c.get("b"), axes)
        try:
            claim = Claim.model_validate(data)
        except ValidationError as e:
            raise _validation_error(f, e) from None
        if claim.id in seen:
            raise ConfigError(f"{f}.id: {claim.id!r} is used twice")
        seen.add(claim.id)
        if claim.a == claim.b:
            raise ConfigError(f"{f}: arms a and b are identical ({claim.a}); they must differ")
        out.append(claim)
    return out
