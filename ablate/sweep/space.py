"""Search-space files (search_spaces/*.yaml): load, validate with one-line errors, expand to trials.

Every field is checked before Ray starts; group options against ``conf/<group>/*.yaml``::

    name: quickstart                  # required; the sweep dir is <output_dir>/<name>
    description: ...                  # optional, shown in the report
    trainable: train                  # optional: a registered trainable (ablate/sweep/trainables.py),
                                      # never an import path; default train (= ablate train per trial)
    base_overrides: [task=addition, train.steps=30]   # Hydra overrides of every trial
    slots:                            # categorical axes over config groups (not `method`)
      mask: [ppo_clip, clip_higher, none]
    methods: [grpo, dapo]             # axis over whole presets (method=<name>); crossed with slots
    params:                           # hyperparameter axes, keyed by Hydra key
      train.lr: {type: loguniform, low: 1.0e-5, high: 1.0e-3}
      train.epochs: {type: choice, values: [1, 4]}          # a plain list is a choice too
      train.minibatches: {type: int, low: 1, high: 4}       # inclusive; optional step, log
      mask.eps_high: {type: uniform, low: 0.2, high: 0.4, when: {mask: [clip_higher]}}
    seeds: [0, 1, 2]                  # replicate axis (an integer n means 0..n-1); default [0];
                                      # {min: 3, max: 20, batch: 1}: sequential seeds (ablate claims)
    metric: eval/pass@1               # required: a key the trainable reports
    mode: max                         # max | min (default max)
    search: {algorithm: grid, num_samples: 8, seed: 0}
        # grid: every combination of slots/methods/choice params (no ranges, no num_samples);
        # random: num_samples seeded draws; optuna_tpe | optuna_random | optuna_cmaes (needs
        # the cmaes package): num_samples Optuna proposals, define-by-run (conditional via when)
    scheduler: {type: asha, time_attr: step, max_t: 30, grace_period: 10, reduction_factor: 2}
        # or null; rungs at grace_period·rf^k < max_t, a trial that survives runs to its end
    resources: {cpu: 1, gpu: 0}       # per trial; fractional gpu allowed; with workers: N (> 1)
                                      # each trial is a Ray Train run of N workers of cpu/gpu each
    max_concurrent: 2                 # optional cap on simultaneous trials
    max_failures: 2                   # retries of a trial after an infrastructure failure (actor
                                      # died, node lost), from its last checkpoint; own errors: none
    output_dir: runs
    wandb: {project: ablate, mode: auto, entity: null}   # auto: online iff a W&B key exists
    report: {metrics: [train/kl_old]}  # extra metrics with report statistics (see ablate/claims/spec.py)
    claims: [...]                     # published claims re-tested by the report (ablate/claims/spec.py)

``when`` refers to a swept categorical axis declared before the parameter (a slot group, ``method``
or a choice param); an inactive parameter is left out of the trial's overrides. Numbers such as
``1e-5`` (read as strings by YAML 1.1) are accepted. Keys set by the sweep (seed, name, swept
axes) may not appear in base_overrides.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ablate.errors import ConfigError, choice_error
from ablate.registry import variant_names
from ablate.schema import MAX_SEED, SLUG_ALLOWED, is_slug
from ablate.claims.spec import Claim, ReportSpec, parse_claims, parse_report
from ablate.spec.groups import GROUPS, SWEEP_GROUPS

DEFAULT_TRAINABLE = "ablate.train.api.run_training"
ALGORITHMS = ("grid", "random", "optuna_tpe", "optuna_random", "optuna_cmaes")
OPTUNA_ALGORITHMS = ("optuna_tpe", "optuna_random", "optuna_cmaes")
SCHEDULERS = ("asha", "none")
PARAM_TYPES = ("choice", "uniform", "loguniform", "int")
MODES = ("max", "min")
WANDB_MODES = ("auto", "online", "offline", "disabled")
TOP_KEYS = ("name", "description", "trainable", "base_overrides", "slots", "methods", "params",
            "seeds", "metric", "mode", "search", "scheduler", "resources", "max_concurrent",
            "max_failures", "output_dir", "wandb", "report", "claims")
MAX_SEEDS = 1000  # replicates per configuration
MAX_SAMPLES = 10_000  # sampled configurations
# what every trial reports (ablate/train/trainer.py reports "step"; Tune adds the others)
TIME_ATTRS = ("step", "training_iteration", "time_total_s")
_KEY_RE = re.compile(r"^(\+\+?)?[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*$")
_PLAIN_STR_RE = re.compile(r"^[A-Za-z_/][A-Za-z0-9_.\-/@:]*$")


# ------------------------------------------------------------------------------------ model
@dataclass
class Param:
    """One hyperparameter axis, keyed by its Hydra override key (``train.lr``)."""

    key: str
    type: str
    values: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    when: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.type}
        if self.type == "choice":
            d["values"] = list(self.values or [])
        else:
            d["low"], d["high"] = self.low, self.high
            if self.type == "int" and self.log:
                d["log"] = True
            if self.step is not None:
                d["step"] = self.step
        if self.when:
            d["when"] = {k: list(v) for k, v in self.when.items()}
        return d

    def active(self, assignment: Mapping[str, Any]) -> bool:
        return all(assignment.get(k) in vals for k, vals in self.when.items())


@dataclass
class SearchSpace:
    name: str
    metric: str
    mode: str = "max"
    description: str = ""
    trainable: str = DEFAULT_TRAINABLE
    base_overrides: list[str] = field(default_factory=list)
    slots: dict[str, list[str]] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    params: dict[str, Param] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    algorithm: str = "grid"
    num_samples: int | None = None
    search_seed: int = 0
    scheduler: dict | None = None
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    max_concurrent: int | None = None
    max_failures: int = 2
    output_dir: str = "runs"
    wandb: dict[str, Any] = field(default_factory=lambda: {"project": "ablate", "mode": "auto",
                                                            "entity": None})
    source: str | None = None  # the file it was read from
    report: ReportSpec = field(default_factory=ReportSpec)  # extra metrics the report analyses
    claims: list[Claim] = field(default_factory=list)  # published claims re-tested by the report
    # sequential seeds {min, max, batch}: `ablate claims` adds seed batches until every claim is
    # decided (ablate/claims/sequential.py); ``seeds`` then holds the first look's seeds
    seed_range: dict[str, int] | None = None

    # -------------------------------------------------------------------------- derived
    @property
    def is_optuna(self) -> bool:
        return self.algorithm in OPTUNA_ALGORITHMS

    def categorical_axes(self) -> list[tuple[str, list]]:
        """(axis name, options) for the config-group axes, in override order."""
        axes: list[tuple[str, list]] = []
        if self.methods:
            axes.append(("method", list(self.methods)))
        for g in SWEEP_GROUPS:
            if g in self.slots:
                axes.append((g, list(self.slots[g])))
        return axes

    def axis_options(self, axis: str) -> list | None:
        for name, opts in self.categorical_axes():
            if name == axis:
                return opts
        p = self.params.get(axis)
        return list(p.values or []) if p is not None and p.type == "choice" else None

    def run_overrides(self) -> list[str]:
        """base_overrides plus what the trial resources imply: with ``resources.workers`` > 1 each
        trial is a Ray Train run of that many workers with ``cpu``/``gpu`` each."""
        w = int(self.resources.get("workers", 1))
        if w <= 1:
            return list(self.base_overrides)
        return list(self.base_overrides) + [
            f"resources.workers={w}", f"resources.cpu_per_worker={self.resources['cpu']:g}",
            f"resources.gpu_per_worker={self.resources['gpu']:g}"]

    def swept_keys(self) -> list[str]:
        return [a for a, _ in self.categorical_axes()] + list(self.params)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        d["trainable"] = self.trainable
        d["base_overrides"] = list(self.base_overrides)
        d["slots"] = {g: list(v) for g, v in self.slots.items()}
        d["methods"] = list(self.methods)
        d["params"] = {k: p.to_dict() for k, p in self.params.items()}
        d["seeds"] = dict(self.seed_range) if self.seed_range else list(self.seeds)
        d["metric"], d["mode"] = self.metric, self.mode
        search: dict[str, Any] = {"algorithm": self.algorithm, "seed": self.search_seed}
        if self.num_samples is not None:
            search["num_samples"] = self.num_samples
        d["search"] = search
        d["scheduler"] = dict(self.scheduler) if self.scheduler else None
        d["resources"] = dict(self.resources)
        d["max_concurrent"] = self.max_concurrent
        d["max_failures"] = self.max_failures
        d["output_dir"] = self.output_dir
        d["wandb"] = dict(self.wandb)
        if self.report.metrics:
            d["report"] = self.report.to_dict()
        if self.claims:
            d["claims"] = [c.to_dict() for c in self.claims]
        return d

    @property
    def max_t(self) -> float | None:
        return self.scheduler.get("max_t") if self.scheduler else None


# ------------------------------------------------------------------------------ validation
def _num(field_: str, v: Any, *, integer: bool = False) -> float | int:
    """A number from YAML; PyYAML reads ``1e-5`` (no dot) as a string, so accept numeric strings."""
    if isinstance(v, bool) or v is None:
        raise ConfigError(f"{field_}: got {v!r}; allowed: a number")
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ConfigError(f"{field_}: got {v!r}; allowed: a number") from None
    if not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ConfigError(f"{field_}: got {v!r}; allowed: a finite number")
    if integer:
        if float(v) != int(v):
            raise ConfigError(f"{field_}: got {v!r}; allowed: an integer")
        return int(v)
    return float(v) if isinstance(v, float) else v


def _mapping(field_: str, v: Any, allowed: Iterable[str] | None = None) -> dict:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"{field_}: got {type(v).__name__} {v!r}; allowed: a mapping")
    v = dict(v)
    if allowed is not None:
        allowed = list(allowed)
        for k in v:
            if k not in allowed:
                raise choice_error(f"{field_}: key", k, allowed)
    return v


def _list(field_: str, v: Any) -> list:
    if v is None:
        return []
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return [v]
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{field_}: got {type(v).__name__} {v!r}; allowed: a list")
    return list(v)


def _scalar_ok(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _check_variants(field_: str, group: str, options: list) -> list[str]:
    if not options:
        raise ConfigError(f"{field_}: needs at least one option; allowed: a list of conf/{group}/ names")
    known = variant_names(group)
    out: list[str] = []
    for o in options:
        if not isinstance(o, str):
            raise ConfigError(f"{field_}: got {o!r}; allowed: config file names (strings)")
        if o not in known:
            raise choice_error(field_, o, known)
        if o in out:
            raise ConfigError(f"{field_}: option {o!r} is listed twice; allowed: each option once")
        out.append(o)
    return out


def _parse_param(key: str, spec: Any) -> Param:
    f = f"params.{key}"
    if not _KEY_RE.match(key):
        raise ConfigError(f"{f}: not a Hydra config key; allowed: dotted keys like train.lr or mask.eps_high")
    bare = key.lstrip("+")
    if bare in GROUPS:
        raise ConfigError(f"{f}: {bare!r} is a config group; allowed: sweep it under slots: (or methods:)")
    if bare in ("seed", "name"):
        raise ConfigError(f"{f}: {bare!r} is set by the sweep; allowed: seeds: for replicates")
    if not isinstance(spec, Mapping):
        if isinstance(spec, list):  # shorthand: a plain list is a choice
            spec = {"type": "choice", "values": spec}
        else:
            raise ConfigError(f"{f}: got {spec!r}; allowed: a mapping like {{type: uniform, low: 0.1, high: 0.3}} or a list")
    spec = dict(spec)
    ptype = spec.get("type")
    if ptype is None:
        raise ConfigError(f"{f}.type: missing; allowed: {', '.join(PARAM_TYPES)}")
    if ptype not in PARAM_TYPES:
        raise choice_error(f"{f}.type", ptype, PARAM_TYPES)
    allowed = {"choice": ("type", "values", "when"),
               "uniform": ("type", "low", "high", "step", "when"),
               "loguniform": ("type", "low", "high", "when"),
               "int": ("type", "low", "high", "step", "log", "when")}[ptype]
    _mapping(f, spec, allowed)
    p = Param(key=key, type=ptype)
    if ptype == "choice":
        vals = _list(f"{f}.values", spec.get("values"))
        if not vals:
            raise ConfigError(f"{f}.values: a choice needs values; allowed: a non-empty list")
        for v in vals:
            if not _scalar_ok(v):
                raise ConfigError(f"{f}.values: got {v!r}; allowed: scalars (number, string, bool, "
                                  f"null)")
        if len(set(map(repr, vals))) != len(vals):
            raise ConfigError(f"{f}.values: duplicate values in {vals!r}; allowed: each value once")
        p.values = vals
    else:
        for b in ("low", "high"):
            if b not in spec:
                raise ConfigError(f"{f}.{b}: missing; allowed: a number (a {ptype} range needs low and high)")
        integer = ptype == "int"
        p.low = _num(f"{f}.low", spec["low"], integer=integer)
        p.high = _num(f"{f}.high", spec["high"], integer=integer)
        if not p.low < p.high:
            raise ConfigError(f"{f}: low ({p.low}) must be < high ({p.high}); allowed: low < high")
        p.log = ptype == "loguniform" or bool(spec.get("log", False))
        if p.log and p.low <= 0:
            raise ConfigError(f"{f}.low: a log range needs low > 0, got {p.low}; allowed: low > 0")
        if spec.get("step") is not None:
            p.step = _num(f"{f}.step", spec["step"], integer=integer)
            if p.step <= 0:
                raise ConfigError(f"{f}.step: got {p.step}; allowed: a number > 0")
            if p.log:
                raise ConfigError(f"{f}.step: cannot be combined with a log range; allowed: step or log")
    if spec.get("when") is not None:
        when = _mapping(f"{f}.when", spec["when"])
        if not when:
            raise ConfigError(f"{f}.when: empty condition; allowed: {{axis: [values]}}")
        p.when = {str(k): _list(f"{f}.when.{k}", v) for k, v in when.items()}
    return p


def validate(data: Any, source: str | None = None) -> SearchSpace:
    """Check a parsed search-space mapping; raise one-line ConfigErrors; return the model."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"search space{f' {source}' if source else ''}: got "
                          f"{type(data).__name__}; allowed: a YAML mapping at the top level")
    data = _mapping("search space", data, TOP_KEYS)
    from ablate.config import check_interpolations

    check_interpolations(data, "search space")  # no ${oc.env:...}: a shared file is data
    space = _identity(data, source)
    for part in (_axes, _params, _seeds, _search, _scheduler, _run_options, _report):
        part(space, data)
    _check_base_overrides(space)
    return space


def _identity(data: Mapping, source: str | None) -> SearchSpace:
    """name, metric, mode, description and the trainable."""
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name: missing (the sweep name; it also names the sweep directory); allowed: {SLUG_ALLOWED}")
    if not is_slug(name):
        raise ConfigError(f"name: got {name!r}; allowed: {SLUG_ALLOWED}")
    metric = data.get("metric")
    if not isinstance(metric, str) or not metric:
        raise ConfigError("metric: missing; allowed: a reported key to optimise, e.g. eval/pass@1")
    mode = data.get("mode", "max")
    if mode not in MODES:
        raise choice_error("mode", mode, MODES)
    space = SearchSpace(name=name, metric=metric, mode=mode, source=source)
    space.description = str(data.get("description") or "").strip()

    from ablate.sweep.trainables import resolve

    # the registered function's import path (what the trial processes import), never the file's
    space.trainable = resolve(data.get("trainable") or DEFAULT_TRAINABLE).path
    return space


def _axes(space: SearchSpace, data: Mapping) -> None:
    """base_overrides, slots (config groups) and methods (whole presets)."""
    base = _list("base_overrides", data.get("base_overrides"))
    for o in base:
        if not isinstance(o, str) or ("=" not in o and not o.startswith("~")):
            raise ConfigError(f"base_overrides: {o!r} is not a Hydra override; allowed: key=value, +key=value, ~key")
    space.base_overrides = [str(o) for o in base]

    slots = _mapping("slots", data.get("slots"))
    for g, opts in slots.items():
        if g == "method":
            raise ConfigError("slots.method: not a slot; allowed: sweep whole presets with the top-level methods: list")
        if g not in SWEEP_GROUPS:
            raise choice_error("slots: group", g, SWEEP_GROUPS)
        space.slots[g] = _check_variants(f"slots.{g}", g, _list(f"slots.{g}", opts))
    if "methods" in data and data["methods"] is not None:
        space.methods = _check_variants("methods", "method", _list("methods", data["methods"]))


def _params(space: SearchSpace, data: Mapping) -> None:
    """Hyperparameter axes; ``when`` conditions name categorical axes declared before them."""
    params = _mapping("params", data.get("params"))
    for key, spec in params.items():
        space.params[str(key)] = _parse_param(str(key), spec)
    # conditions refer to categorical axes declared before the parameter
    seen: dict[str, list] = {a: opts for a, opts in space.categorical_axes()}
    for key, p in space.params.items():
        for axis, vals in p.when.items():
            if axis not in seen:
                raise choice_error(f"params.{key}.when: axis", axis, list(seen) or ["(none swept)"])
            for v in vals:
                if v not in seen[axis]:
                    raise choice_error(f"params.{key}.when.{axis}", v, seen[axis])
        if p.type == "choice":
            seen[key] = list(p.values or [])


def _seeds(space: SearchSpace, data: Mapping) -> None:
    seeds = data.get("seeds", [0])
    if isinstance(seeds, Mapping):
        space.seed_range = _seed_range(seeds)
        seeds = list(range(space.seed_range["min"]))
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError(f"seeds: got {seeds}; allowed: an integer n in [1, {MAX_SEEDS}] "
                              "(= seeds 0..n-1) or a list of seeds")
        seeds = list(range(seeds))
    seeds = _list("seeds", seeds)
    if not seeds:
        raise ConfigError("seeds: needs at least one seed; allowed: a list of integers >= 0, or n >= 1")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"seeds: got {len(seeds)} seeds; allowed: at most {MAX_SEEDS}")
    space.seeds = [int(_num("seeds", s, integer=True)) for s in seeds]
    for sd in space.seeds:
        if not 0 <= sd <= MAX_SEED:
            raise ConfigError(f"seeds: got {sd}; allowed: integers in [0, {MAX_SEED}]")
    if len(set(space.seeds)) != len(space.seeds):
        raise ConfigError(f"seeds: duplicate seeds in {space.seeds}; allowed: each seed once")


def _search(space: SearchSpace, data: Mapping) -> None:
    """search.algorithm, num_samples (samplers only) and seed."""
    search = _mapping("search", data.get("search"), ("algorithm", "num_samples", "seed"))
    algo = search.get("algorithm", "grid")
    if algo not in ALGORITHMS:
        raise choice_error("search.algorithm", algo, ALGORITHMS)
    space.algorithm = algo
    if algo == "optuna_cmaes" and importlib.util.find_spec("cmaes") is None:
        raise ConfigError("search.algorithm: optuna_cmaes needs the 'cmaes' package "
                          "(pip install cmaes); allowed without it: "
                          + ", ".join(a for a in ALGORITHMS if a != "optuna_cmaes"))
    if algo == "grid":
        if search.get("num_samples") is not None:
            raise ConfigError("search.num_samples: grid runs every combination once per seed; allowed: "
                              "remove num_samples, or pick a sampler (random, optuna_tpe, ...)")
        for key, p in space.params.items():
            if p.type != "choice":
                raise ConfigError(f"params.{key}: grid search crosses only choice params; allowed: a "
                                  f"{p.type} range needs a sampler (search.algorithm: random, "
                                  f"optuna_tpe, optuna_random)")
    else:
        if search.get("num_samples") is None:
            raise ConfigError(f"search.num_samples: required for algorithm {algo}; allowed: an integer in "
                              f"[1, {MAX_SAMPLES}] (configurations to sample; each runs once per seed)")
        space.num_samples = int(_num("search.num_samples", search["num_samples"], integer=True))
        if not 1 <= space.num_samples <= MAX_SAMPLES:
            raise ConfigError(f"search.num_samples: got {space.num_samples}; allowed: an integer "
                              f"in [1, {MAX_SAMPLES}]")
    space.search_seed = int(_num("search.seed", search.get("seed", 0), integer=True))
    if not 0 <= space.search_seed <= MAX_SEED:
        raise ConfigError(f"search.seed: got {space.search_seed}; allowed: an integer in "
                          f"[0, {MAX_SEED}]")


def _scheduler(space: SearchSpace, data: Mapping) -> None:
    """Optional ASHA early stopping: rungs at grace_period * reduction_factor^k < max_t."""
    sched = data.get("scheduler")
    if isinstance(sched, str):
        sched = {"type": sched}
    if sched is not None:
        sched = _mapping("scheduler", sched, ("type", "time_attr", "max_t", "grace_period",
                                              "reduction_factor", "brackets"))
        stype = sched.get("type")
        if stype is None:
            raise ConfigError(f"scheduler.type: missing; allowed: {', '.join(SCHEDULERS)}")
        if stype not in SCHEDULERS:
            raise choice_error("scheduler.type", stype, SCHEDULERS)
        if stype == "asha":
            if sched.get("max_t") is None:
                raise ConfigError("scheduler.max_t: required for asha; allowed: a number > 0 (the full budget in "
                                  "time_attr units, e.g. train.steps)")
            max_t = _num("scheduler.max_t", sched["max_t"])
            grace = _num("scheduler.grace_period", sched.get("grace_period", 1))
            rf = _num("scheduler.reduction_factor", sched.get("reduction_factor", 2))
            brackets = int(_num("scheduler.brackets", sched.get("brackets", 1), integer=True))
            time_attr = sched.get("time_attr", "step")
            if time_attr not in TIME_ATTRS:
                raise choice_error("scheduler.time_attr", time_attr, TIME_ATTRS)
            if max_t <= 0:
                raise ConfigError(f"scheduler.max_t: got {max_t}; allowed: a number > 0")
            if not 0 < grace < max_t:
                raise ConfigError(f"scheduler.grace_period: must be > 0 and < max_t ({max_t}), "
                                  f"got {grace}; allowed: a number in (0, {max_t})")
            if rf <= 1:
                raise ConfigError(f"scheduler.reduction_factor: got {rf}; allowed: a number > 1")
            if brackets < 1:
                raise ConfigError(f"scheduler.brackets: got {brackets}; allowed: an integer >= 1")
            space.scheduler = {"type": "asha", "time_attr": time_attr, "max_t": max_t,
                               "grace_period": grace, "reduction_factor": rf, "brackets": brackets}


def _run_options(space: SearchSpace, data: Mapping) -> None:
    """resources, max_concurrent, max_failures, output_dir and wandb."""
    res = _mapping("resources", data.get("resources"), ("cpu", "gpu", "workers"))
    cpu = _num("resources.cpu", res.get("cpu", 1))
    gpu = _num("resources.gpu", res.get("gpu", 0))
    workers = int(_num("resources.workers", res.get("workers", 1), integer=True))
    if not 0 < cpu <= 4096:
        raise ConfigError(f"resources.cpu: got {cpu}; allowed: a number in (0, 4096]")
    if not 0 <= gpu <= 1024:
        raise ConfigError(f"resources.gpu: got {gpu}; allowed: a number in [0, 1024]")
    if not 1 <= workers <= 1024:
        raise ConfigError(f"resources.workers: got {workers}; allowed: an integer in [1, 1024]")
    space.resources = {"cpu": float(cpu), "gpu": float(gpu), "workers": workers}

    mc = data.get("max_concurrent")
    if mc is not None:
        mc = int(_num("max_concurrent", mc, integer=True))
        if mc < 1:
            raise ConfigError(f"max_concurrent: got {mc}; allowed: an integer >= 1, or null")
    space.max_concurrent = mc

    mf = data.get("max_failures", 2)
    mf = int(_num("max_failures", mf, integer=True))
    if mf < 0:
        raise ConfigError(f"max_failures: got {mf}; allowed: an integer >= 0")
    space.max_failures = mf

    out = data.get("output_dir", "runs")
    if not isinstance(out, str) or not out:
        raise ConfigError(f"output_dir: got {out!r}; allowed: a directory path")
    space.output_dir = out

    wb = _mapping("wandb", data.get("wandb"), ("project", "mode", "entity"))
    wmode = wb.get("mode", "auto")
    if wmode not in WANDB_MODES:
        raise choice_error("wandb.mode", wmode, WANDB_MODES)
    space.wandb = {"project": str(wb.get("project") or "ablate"), "mode": wmode,
                   "entity": wb.get("entity")}


def _report(space: SearchSpace, data: Mapping) -> None:
    """report metrics and claims (claims name swept axes and their values)."""
    space.report = parse_report(data.get("report"))
    axes = {a: opts for a, opts in space.categorical_axes()}
    axes.update({k: list(p.values or []) for k, p in space.params.items() if p.type == "choice"})
    space.claims = parse_claims(data.get("claims"), axes)


def _check_base_overrides(space: SearchSpace) -> None:
    """base_overrides may not set what the sweep varies, nor seed/name (set per trial)."""
    swept = set(space.swept_keys())
    for o in space.base_overrides:
        k = o.split("=", 1)[0].lstrip("+~")
        if k in swept:
            raise ConfigError(f"base_overrides: {o!r} sets {k!r}, which the sweep varies; allowed: "
                              f"one of them")
        if k in ("seed", "name"):
            raise ConfigError(f"base_overrides: {o!r}: the sweep sets {k} per trial; allowed: other keys"
                              + (" (use seeds:)" if k == "seed" else ""))


SEED_RANGE_KEYS = ("min", "max", "batch")


def _seed_range(v: Mapping) -> dict[str, int]:
    """``seeds: {min: 3, max: 20, batch: 1}``: sequential seeds 0..max-1, looked at from min on."""
    for k in v:
        if k not in SEED_RANGE_KEYS:
            raise choice_error("seeds: key", k, SEED_RANGE_KEYS)
    out = {}
    for k, default in (("min", None), ("max", None), ("batch", 1)):
        x = v.get(k, default)
        if x is None:
            raise ConfigError(f"seeds.{k}: missing (sequential seeds need min and max, e.g. "
                              "{min: 3, max: 20})")
        if isinstance(x, bool) or not isinstance(x, int):
            raise ConfigError(f"seeds.{k}: expected an integer, got {x!r}")
        out[k] = x
    if not 2 <= out["min"] <= out["max"] or out["batch"] < 1:
        raise ConfigError(f"seeds: need 2 <= min <= max and batch >= 1, got {dict(v)}")
    return out


def load_search_space(path: str | Path, *, extra_overrides: Iterable[str] = (),
                      name: str | None = None, output_dir: str | None = None) -> SearchSpace:
    """Read and validate a search-space YAML; CLI overrides are appended to base_overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space: file not found: {path}; allowed: a search-space YAML file")
    from ablate.spec.yaml import load_file

    data = load_file(path, f"search space {path}")
    if isinstance(data, Mapping):
        data = dict(data)
        if name:
            data["name"] = name
        if output_dir:
            data["output_dir"] = output_dir
        extra = list(extra_overrides)
        if extra:
            data["base_overrides"] = _list("base_overrides", data.get("base_overrides")) + extra
    return validate(data, source=str(path))


# ------------------------------------------------------------------------------- expansion
def fmt_value(v: Any) -> str:
    """A value as text for combo keys (short, stable)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format(v, ".6g")
    return "null" if v is None else str(v)


def hydra_value(v: Any) -> str:
    """A scalar as a Hydra override value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    if _PLAIN_STR_RE.match(s) and s.lower() not in ("true", "false", "null", "none", "nan", "inf"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def assignment_overrides(assignment: Mapping[str, Any]) -> list[str]:
    """Hydra overrides of one assignment: the method preset first, then slots, then params."""
    out: list[str] = []
    if "method" in assignment:
        out.append(f"method={assignment['method']}")
    for g in SWEEP_GROUPS:
        if g in assignment:
            out.append(f"{g}={assignment[g]}")
    for k, v in assignment.items():
        if k != "method" and k not in GROUPS:
            out.append(f"{k}={hydra_value(v)}")
    return out


def combo_key(assignment: Mapping[str, Any]) -> str:
    """The string key of a slot/param combination (seed excluded): 'mask=none,train.lr=0.0003'."""
    parts = [o.split("=", 1) for o in assignment_overrides(assignment)]
    shown = [f"{k}={fmt_value(assignment[k]) if k in assignment else v}" for k, v in parts]
    return ",".join(shown) or "base"


def categorical_key(assignment: Mapping[str, Any]) -> str:
    """Only the config-group choices (method + slots): the W&B job_type of a trial."""
    sub = {k: v for k, v in assignment.items() if k == "method" or k in GROUPS}
    return combo_key(sub)


def spec_key(assignment: Mapping[str, Any], seed: int) -> str:
    return f"{combo_key(assignment)}|seed={seed}"


def _ordered(space: SearchSpace, assignment: Mapping[str, Any]) -> dict:
    """Assignment in canonical order (categorical axes, then params as declared)."""
    out = {a: assignment[a] for a, _ in space.categorical_axes() if a in assignment}
    out.update({k: assignment[k] for k in space.params if k in assignment})
    return out


def grid_assignments(space: SearchSpace) -> list[dict]:
    """Cross product of categorical axes and choice params; conditional params only where active."""
    axes = space.categorical_axes()
    combos: list[dict] = [{}]
    for axis, opts in axes:
        combos = [{**c, axis: o} for c in combos for o in opts]
    for key, p in space.params.items():
        nxt: list[dict] = []
        for c in combos:
            if p.active(c):
                nxt.extend({**c, key: v} for v in (p.values or []))
            else:
                nxt.append(c)
        combos = nxt
    seen: set[str] = set()
    out = []
    for c in combos:
        k = combo_key(c)
        if k not in seen:
            seen.add(k)
            out.append(_ordered(space, c))
    return out


def tune_domain(p: Param):
    """The Ray Tune search domain of a param (tune.choice / uniform / loguniform / q* / randint)."""
    from ray import tune

    if p.type == "choice":
        return tune.choice(list(p.values or []))
    lo, hi = float(p.low), float(p.high)  # type: ignore[arg-type]
    if p.type == "int":
        if p.log:
            return tune.lograndint(int(lo), int(hi) + 1)  # upper bound exclusive
        return tune.qrandint(int(lo), int(hi), int(p.step or 1))  # upper bound inclusive
    if p.log:
        return tune.qloguniform(lo, hi, p.step) if p.step else tune.loguniform(lo, hi)
    return tune.quniform(lo, hi, p.step) if p.step else tune.uniform(lo, hi)


def _py(v: Any) -> Any:
    item = getattr(v, "item", None)
    return item() if callable(item) else v


def random_assignments(space: SearchSpace) -> list[dict]:
    """``num_samples`` draws by Ray Tune's own sampler (its domains and variant generator, seeded
    by ``search.seed``), drawn up front so each (draw, seed) is a planned trial with a stable key;
    a conditional param is kept only where its ``when`` holds."""
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    spec: dict[str, Any] = {axis: _tune_choice(opts) for axis, opts in space.categorical_axes()}
    spec.update({key: tune_domain(p) for key, p in space.params.items()})
    rs = np.random.RandomState(space.search_seed)
    out = []
    for _ in range(int(space.num_samples or 0)):
        _, cfg = next(generate_variants({"config": spec}, random_state=rs))
        drawn = cfg["config"]
        a: dict[str, Any] = {axis: _py(drawn[axis]) for axis, _ in space.categorical_axes()}
        for key, p in space.params.items():
            if p.active(a):
                a[key] = _py(drawn[key])
        out.append(a)
    return out


def _tune_choice(opts: list):
    from ray import tune

    return tune.choice(list(opts))


def plan_trials(space: SearchSpace) -> list[dict] | None:
    """The trial specs of grid/random searches ({key, combo, assign, seed}); None for Optuna.

    Seeds are the outer loop, so the first replicate of every combination runs first.
    """
    if space.is_optuna:
        return None
    assigns = grid_assignments(space) if space.algorithm == "grid" else random_assignments(space)
    specs = []
    seen: set[str] = set()
    for seed in space.seeds:
        for i, a in enumerate(assigns):
            key = spec_key(a, seed)
            if key in seen:  # random draws can repeat a categorical-only combination
                key = f"{key}#{i}"
            seen.add(key)
            specs.append({"key": key, "combo": combo_key(a), "assign": a, "seed": seed})
    return specs


class OptunaSpace:
    """Define-by-run space for OptunaSearch: categorical axes, then params (conditional via when).

    A module-level class holding plain data, so Tune can pickle it into its searcher state.
    """

    def __init__(self, space: SearchSpace):
        self.categorical = space.categorical_axes()
        self.params = [(k, p.to_dict()) for k, p in space.params.items()]

    def __call__(self, trial) -> dict:
        chosen: dict[str, Any] = {}
        inactive: dict[str, Any] = {}
        for axis, opts in self.categorical:
            chosen[axis] = trial.suggest_categorical(axis, opts)
        for key, spec in self.params:
            when = spec.get("when") or {}
            if not all(chosen.get(a) in vals for a, vals in when.items()):
                inactive[key] = None  # present (as None) so every trial has every column
                continue
            t = spec["type"]
            if t == "choice":
                chosen[key] = trial.suggest_categorical(key, spec["values"])
            elif t == "int":
                chosen[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]),
                                                step=int(spec.get("step") or 1),
                                                log=bool(spec.get("log", False)))
            else:
                chosen[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                                  log=t == "loguniform", step=spec.get("step"))
        return inactive


def conditions(space: SearchSpace) -> dict[str, dict[str, list]]:
    return {k: {a: list(v) for a, v in p.when.items()} for k, p in space.params.items() if p.when}


def active_assignment(config: Mapping[str, Any], conds: Mapping[str, Mapping[str, list]]) -> dict:
    """A trial config without the params whose ``when`` does not hold (Optuna fills them with None)."""
    out = dict(config)
    for key, when in conds.items():
        if key in out and not all(out.get(a) in vals for a, vals in when.items()):
            del out[key]
    return out
