"""The ``report:`` and ``claims:`` keys of a search space: which extra metrics the report analyses,
and published claims stated as data (two arms, a metric, an aggregation, an expected direction).

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
        aggregation: mean                 # final | mean | slope  (over the run's logged values)
        expect: higher                    # a relative to b: higher | lower
        notes: what was tried, caveats    # optional, shown in the report

Pure parsing and validation (no heavy imports): ``ablate.sweep.space`` calls it while validating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ablate.errors import ConfigError, choice_error

AGGREGATIONS = ("final", "mean", "slope")
EXPECT = ("higher", "lower")
CLAIM_KEYS = ("id", "paper", "arxiv", "claim", "a", "b", "metric", "aggregation", "expect", "notes")
REPORT_KEYS = ("metrics",)
_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_@./-]*$")
_ARXIV_RE = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    arxiv: str
    claim: str
    a: dict[str, Any]
    b: dict[str, Any]
    metric: str
    aggregation: str = "final"
    expect: str = "higher"
    notes: str = ""

    @property
    def terms(self) -> tuple[str, ...]:
        """The logged metric names the claim's metric is made of (one, or two for "M1 - M2")."""
        return metric_terms(self.metric)

    def to_dict(self) -> dict:
        d = {"id": self.id, "paper": self.paper, "arxiv": self.arxiv, "claim": self.claim,
             "a": dict(self.a), "b": dict(self.b), "metric": self.metric,
             "aggregation": self.aggregation, "expect": self.expect}
        if self.notes:
            d["notes"] = self.notes
        return d


@dataclass
class ReportSpec:
    metrics: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"metrics": list(self.metrics)}


def metric_terms(metric: str) -> tuple[str, ...]:
    """``"a"`` → ("a",); ``"a - b"`` → ("a", "b"). Raises ValueError for anything else."""
    parts = [p.strip() for p in str(metric).split(" - ")]
    if len(parts) > 2 or not all(_METRIC_RE.match(p) for p in parts):
        raise ValueError(metric)
    return tuple(parts)


def _text(field_: str, v: Any, required: bool = True) -> str:
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise ConfigError(f"{field_}: missing")
        return ""
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise ConfigError(f"{field_}: expected text, got {v!r}")
    return " ".join(str(v).split())


def check_metric_name(field_: str, v: Any, allow_difference: bool = False) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{field_}: expected a logged metric name like train/entropy, got {v!r}")
    try:
        terms = metric_terms(v)
    except ValueError:
        raise ConfigError(f"{field_}: {v!r} is not a metric name (like train/entropy"
                          + (' or "eval/pass@1 - eval/pass@8"' if allow_difference else "")
                          + ")") from None
    if len(terms) > 1 and not allow_difference:
        raise ConfigError(f"{field_}: {v!r}: a difference of metrics is allowed only in claims")
    return " - ".join(terms)


def parse_report(v: Any) -> ReportSpec:
    if v is None:
        return ReportSpec()
    if not isinstance(v, Mapping):
        raise ConfigError(f"report: expected a mapping like {{metrics: [train/entropy]}}, got {v!r}")
    for k in v:
        if k not in REPORT_KEYS:
            raise choice_error("report: key", k, REPORT_KEYS)
    ms = v.get("metrics")
    if ms is None:
        ms = []
    if isinstance(ms, str):
        ms = [ms]
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
        opts = axes[k]
        match = [o for o in opts if o == val or str(o) == str(val)]
        if not match:
            raise choice_error(f"{field_}.{k}", val, [str(o) for o in opts])
        out[k] = match[0]
    return out


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
        cid = _text(f"{f}.id", c.get("id"))
        if not _ID_RE.match(cid):
            raise ConfigError(f"{f}.id: {cid!r} may use only letters, digits, '_', '-' and '.'")
        if cid in seen:
            raise ConfigError(f"{f}.id: {cid!r} is used twice")
        seen.add(cid)
        f = f"claims.{cid}"
        arxiv = _text(f"{f}.arxiv", c.get("arxiv"))
        if not _ARXIV_RE.match(arxiv):
            raise ConfigError(f"{f}.arxiv: {arxiv!r} is not an arXiv id like 2503.14476")
        a = _arm(f"{f}.a", c.get("a"), axes)
        b = _arm(f"{f}.b", c.get("b"), axes)
        if a == b:
            raise ConfigError(f"{f}: arms a and b are identical ({a}); they must differ")
        agg = c.get("aggregation", "final")
        if agg not in AGGREGATIONS:
            raise choice_error(f"{f}.aggregation", agg, AGGREGATIONS)
        exp = c.get("expect")
        if exp not in EXPECT:
            raise choice_error(f"{f}.expect", exp, EXPECT)
        out.append(Claim(id=cid, paper=_text(f"{f}.paper", c.get("paper")), arxiv=arxiv,
                         claim=_text(f"{f}.claim", c.get("claim")), a=a, b=b,
                         metric=check_metric_name(f"{f}.metric", c.get("metric"), True),
                         aggregation=agg, expect=exp,
                         notes=_text(f"{f}.notes", c.get("notes"), required=False)))
    return out
