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

A claim about an estimator (e.g. "OPO lowers gradient variance") is a property at a fixed policy,
so it is tested with the counterfactual probe (``ablate.probe``) instead of a sweep: ``kind: probe``,
in a probe claim file (``name``, ``description``, ``claims``; no sweep keys)::

    name: claim_opo_probe
    description: OPO vs group-mean baseline at the warm start
    claims:
      - id: opo_lower_grad_var_probe
        kind: probe
        paper: ...; arxiv: ...; claim: ...
        base: [method=grpo, aggregation=seq_mean_token_sum]   # overrides shared by both arms
        a: {advantage: opo}               # arm a's extra overrides (key: value)
        b: {advantage: group_centered}    # arm b's (the reference of the probe's bias)
        metric: trace_cov                 # trace_cov | rel_var (per batch, see ablate/probe)
        batches: 32                       # shared rollout batches (the paired replicates)
        expect: lower                     # effect / margin / misspecified / notes as above

Pure parsing and validation (pydantic, no heavy imports): ``ablate.sweep.space`` calls it while
validating.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ablate.errors import ConfigError, choice_error
from ablate.spec.translate import Problem, config_error

AGGREGATIONS = ("final", "mean", "slope", "auc", "last3")
EXPECT = ("higher", "lower")
KINDS = ("sweep", "probe")
PROBE_METRICS = ("trace_cov", "rel_var")
MAX_PROBE_BATCHES = 1024
CLAIM_KEYS = ("id", "paper", "arxiv", "claim", "kind", "a", "b", "metric", "aggregation", "expect", "effect",
              "margin", "misspecified", "notes")
PROBE_CLAIM_KEYS = ("id", "paper", "arxiv", "claim", "kind", "base", "a", "b", "metric", "batches", "expect",
                    "effect", "margin", "misspecified", "notes")
PROBE_FILE_KEYS = ("name", "description", "claims")
_OVERRIDE_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_OVERRIDE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=[^\s=]*$")
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
        raise Problem("missing")
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise Problem(f"expected text, got {v!r}")
    return " ".join(str(v).split())


class Claim(BaseModel):
    """One published claim: a − b on ``metric`` (per run, aggregated; or, ``kind: probe``, per
    shared rollout batch of the estimator probe) is expected ``expect``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    paper: str
    arxiv: str
    claim: str
    kind: Literal["sweep", "probe"] = "sweep"
    base: tuple[str, ...] = ()
    a: dict[str, Any]
    b: dict[str, Any]
    metric: str
    aggregation: Literal["final", "mean", "slope", "auc", "last3"] = "final"
    batches: Optional[int] = Field(default=None, ge=2, le=MAX_PROBE_BATCHES, strict=True)
    expect: Literal["higher", "lower"] = "higher"
    effect: Optional[float] = Field(default=None, gt=0, allow_inf_nan=False)
    margin: Optional[float] = Field(default=None, gt=0, allow_inf_nan=False)
    misspecified: str = ""
    notes: str = ""

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, v: Any) -> tuple:
        if v is None:
            return ()
        if not isinstance(v, (list, tuple)):
            raise Problem(f"got {v!r}; allowed: a list of overrides like [method=grpo]")
        for o in v:
            if not isinstance(o, str) or not _OVERRIDE_RE.match(o.strip()):
                raise Problem(f"{o!r} is not an override key=value")
        return tuple(o.strip() for o in v)

    @model_validator(mode="after")
    def _kind(self) -> "Claim":
        if self.kind == "probe":
            if self.metric not in PROBE_METRICS:
                raise Problem(f"{self.metric!r} is not a probe metric; allowed: {', '.join(PROBE_METRICS)}",
                              ("metric",))
            if self.batches is None:
                raise Problem(f"missing; a probe claim needs the number of shared rollout batches (an "
                              f"integer 2..{MAX_PROBE_BATCHES})", ("batches",))
            for side in ("a", "b"):
                probe_overrides(side, getattr(self, side))
        elif self.base or self.batches is not None:
            raise Problem("only for kind: probe claims (a sweep claim's arms are the sweep's axes)",
                          ("base / batches",))
        return self

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
            raise Problem(f"{v!r} may use only letters, digits, '_', '-' and '.'")
        return v

    @field_validator("arxiv")
    @classmethod
    def _arxiv(cls, v: str) -> str:
        if not _ARXIV_RE.match(v):
            raise Problem(f"{v!r} is not an arXiv id like 2503.14476")
        return v

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, v: Any) -> str:
        return _metric_name(v, allow_difference=True)

    @property
    def terms(self) -> tuple[str, ...]:
        """The logged metric names the claim's metric is made of (one, or two for "M1 - M2")."""
        return metric_terms(self.metric)

    @property
    def is_probe(self) -> bool:
        return self.kind == "probe"

    def overrides(self, side: str) -> list[str]:
        """A probe claim's arm (``"a"`` or ``"b"``) as ``key=value`` overrides."""
        return probe_overrides(side, getattr(self, side))

    def to_dict(self) -> dict:
        d = self.model_dump()
        d["base"] = list(d["base"])
        drop = {"kind": "sweep", "base": [], "batches": None}
        if self.is_probe:
            drop["aggregation"] = "final"
        return {k: v for k, v in d.items()
                if not (k in ("notes", "misspecified") and not v) and not (k in ("effect", "margin") and v is None)
                and not (k in drop and v == drop[k])}


def _override_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float, str)) and not any(ch.isspace() or ch == "=" for ch in str(v)) and str(v):
        return str(v)
    raise ValueError(f"expected a scalar without spaces, got {v!r}")


def probe_overrides(side: str, arm: Mapping[str, Any]) -> list[str]:
    """``{advantage: opo}`` → ``["advantage=opo"]``; a Problem (a ValueError) at the bad key."""
    out = []
    for k, v in arm.items():
        if not _OVERRIDE_KEY_RE.match(str(k)):
            raise Problem(f"{k!r} is not a config key like advantage or train.lr", (side,))
        try:
            out.append(f"{k}={_override_value(v)}")
        except ValueError as e:
            raise Problem(str(e), (side, str(k))) from None
    return out


class ReportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: list[str] = Field(default_factory=list)

    def to_dict(self) -> dict:
        return {"metrics": list(self.metrics)}


def _metric_name(v: Any, allow_difference: bool) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Problem(f"got {v!r}; allowed: a logged metric name like train/entropy")
    try:
        terms = metric_terms(v)
    except ValueError:
        raise Problem(f"{v!r} is not a metric name (like train/entropy"
                         + (' or "eval/pass@1 - eval/pass@8"' if allow_difference else "") + ")") from None
    if len(terms) > 1 and not allow_difference:
        raise Problem(f"{v!r}: a difference of metrics is allowed only in claims")
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
        raise ConfigError(f"report.metrics: got {ms!r}; allowed: a list of logged metric names")
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


def parse_claims(v: Any, axes: Mapping[str, list]) -> list[Claim]:
    """Validate ``claims:`` against the swept axes (``axis -> options``: slot groups, ``method``,
    choice params). Each arm must pick options of swept axes, and the arms must differ."""
    if v is None:
        return []
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"claims: got {type(v).__name__}; allowed: a list of claims (mappings)")
    return _parse_list(v, axes)


def _parse_list(v: Any, axes: Mapping[str, list] | None) -> list[Claim]:
    """Sweep claims (``axes`` given: arms pick swept options) or probe claims (``axes`` None: arms
    are config overrides)."""
    keys = CLAIM_KEYS if axes is not None else PROBE_CLAIM_KEYS
    out: list[Claim] = []
    seen: set[str] = set()
    for i, c in enumerate(v):
        f = f"claims[{i}]"
        if not isinstance(c, Mapping):
            raise ConfigError(f"{f}: expected a mapping with {', '.join(keys)}")
        raw_id = c.get("id")
        fid = f"claims.{raw_id}" if isinstance(raw_id, str) and _ID_RE.match(raw_id.strip()) else f
        kind = c.get("kind", "sweep")
        if axes is not None and kind == "probe":
            raise ConfigError(f"{fid}.kind: probe claims go in a probe claim file of their own (keys "
                              f"{', '.join(PROBE_FILE_KEYS)}; no sweep), not in a search space")
        if axes is None and kind != "probe":
            raise choice_error(f"{fid}.kind", kind, ["probe"])
        for k in c:
            if k not in keys:
                raise choice_error(f"{f}: key", k, keys)
        f = fid
        data = {k: c[k] for k in c}
        if axes is not None:
            data["a"] = _arm(f"{f}.a", c.get("a"), axes)
            data["b"] = _arm(f"{f}.b", c.get("b"), axes)
        else:
            for side in ("a", "b"):
                if not isinstance(c.get(side), Mapping) or not c.get(side):
                    raise ConfigError(f"{f}.{side}: expected a mapping of config key -> value, like "
                                      f"{{advantage: opo}}, got {c.get(side)!r}")
        try:
            claim = Claim.model_validate(data)
        except ValidationError as e:
            raise config_error(e, Claim, prefix=f"{f}.", name=f) from None
        if claim.id in seen:
            raise ConfigError(f"{f}.id: {claim.id!r} is used twice")
        seen.add(claim.id)
        if claim.a == claim.b:
            raise ConfigError(f"{f}: arms a and b are identical ({claim.a}); they must differ")
        out.append(claim)
    return out


class ProbeFile(BaseModel):
    """A probe claim file: claims tested by the estimator probe, no sweep."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    claims: tuple[Claim, ...]


def is_probe_file(data: Any) -> bool:
    """A claims file whose claims are all ``kind: probe`` (and that has no sweep keys)."""
    cl = data.get("claims") if isinstance(data, Mapping) else None
    return bool(cl) and isinstance(cl, list) and all(isinstance(c, Mapping) and c.get("kind") == "probe"
                                                     for c in cl)


def parse_probe_file(data: Any, source: str = "probe claim file") -> ProbeFile:
    """Validate a probe claim file (``name``, ``description``, ``claims`` of kind probe)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with {', '.join(PROBE_FILE_KEYS)}")
    for k in data:
        if k not in PROBE_FILE_KEYS:
            raise choice_error(f"{source}: key", k, PROBE_FILE_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not _ID_RE.match(name):
        raise ConfigError(f"{source}.name: got {name!r}; allowed: letters, digits, '_', '-' and '.'")
    cl = data.get("claims")
    if not isinstance(cl, (list, tuple)) or not cl:
        raise ConfigError(f"{source}.claims: expected a non-empty list of probe claims, got {cl!r}")
    desc = data.get("description")
    return ProbeFile(name=name, description="" if desc is None else _one_line(desc),
                     claims=tuple(_parse_list(cl, None)))
