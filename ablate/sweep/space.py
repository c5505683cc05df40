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
or a choice param); an inactive parameter is left out of the trial's overrides. Keys set by the
sweep (seed, name, swept axes) may not appear in base_overrides.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterable, Mapping, Optional, Union

from annotated_types import Ge, Gt, Le
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ablate.errors import ConfigError, choice_error, choice_text
from ablate.registry import variant_names
from ablate.schema import MAX_SEED, SLUG_ALLOWED, is_slug
from ablate.spec.translate import Problem, check
from ablate.claims.spec import ReportSpec, parse_claims, parse_report
from ablate.spec.groups import GROUPS, SWEEP_GROUPS
from ablate.tracking.trials import run_key
from ablate.tracking.wandb_logger import MODES as WANDB_MODES

DEFAULT_TRAINABLE = "ablate.train.api.run_training"
ALGORITHMS = ("grid", "random", "optuna_tpe", "optuna_random", "optuna_cmaes")
OPTUNA_ALGORITHMS = ("optuna_tpe", "optuna_random", "optuna_cmaes")
SCHEDULERS = ("asha", "none")
PARAM_KEYS = {"choice": ("type", "values", "when"), "uniform": ("type", "low", "high", "step", "when"),
              "loguniform": ("type", "low", "high", "when"),
              "int": ("type", "low", "high", "step", "log", "when")}  # the keys each param type takes
PARAM_TYPES = tuple(PARAM_KEYS)
MODES = ("max", "min")
MAX_SEEDS = 1000  # replicates per configuration
MAX_SAMPLES = 10_000  # sampled configurations
# what every trial reports (ablate/train/trainer.py reports "step"; Tune adds the others)
TIME_ATTRS = ("step", "training_iteration", "time_total_s")
_KEY_RE = re.compile(r"^(\+\+?)?[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*$")
_PLAIN_STR_RE = re.compile(r"^[A-Za-z_/][A-Za-z0-9_.\-/@:]*$")


# ------------------------------------------------------------------------------ validation
# The file format as pydantic models: a field's checks sit on the field (bounds as Ge/Gt/Le), a
# section's on its model; a failure is one line naming the field (ablate.spec.translate.check: a
# bound in the words of the field's type, a Problem in its own). Checks across sections
# (conditions, grid vs ranges, claims, base_overrides) run on the validated SearchSpace, whose
# axes they need.
def _number(v: Any) -> float | int:
    """A number (``1e-5`` is one: ablate.spec.yaml reads YAML 1.2 floats); a bool or string is not."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Problem(f"got {v!r}; allowed: a number")
    if not math.isfinite(float(v)):
        raise Problem(f"got {v!r}; allowed: a finite number")
    return v


def _integer(v: Any, loc: tuple = ()) -> int:
    x = _number(v)
    if float(x) != int(x):
        raise Problem(f"got {v!r}; allowed: an integer", loc)
    return int(x)


def _as_list(v: Any, loc: tuple = ()) -> list:
    """None -> [], a scalar -> [it], a list as is."""
    if v is None or isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return [] if v is None else [v]
    if not isinstance(v, (list, tuple)):
        raise Problem(f"got {type(v).__name__} {v!r}; allowed: a list", loc)
    return list(v)


def _as_mapping(v: Any) -> dict:
    if v is not None and not isinstance(v, Mapping):
        raise Problem(f"got {type(v).__name__} {v!r}; allowed: a mapping")
    return dict(v or {})


def _choice(v: Any, allowed: Iterable, loc: tuple = ()) -> Any:
    if v not in tuple(allowed):
        raise Problem(choice_text(v, allowed), loc)
    return v


def _required(what: str) -> BeforeValidator:
    def check(v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise Problem(f"missing{what}")
        return v
    return BeforeValidator(check)


Number = Annotated[Union[int, float], BeforeValidator(_number)]
Int = Annotated[int, BeforeValidator(_integer)]
REQUIRED = Field(None, validate_default=True)  # missing is checked by the field's own validator


def OneOf(allowed: tuple) -> BeforeValidator:  # noqa: N802 (used like a type)
    return BeforeValidator(lambda v: _choice(v, allowed))


class _Section(BaseModel):
    """A mapping with known keys (null = all defaults); any other key is an error."""

    model_config = ConfigDict(extra="forbid")
    shorthand: ClassVar[Optional[str]] = None  # `scheduler: asha` = `scheduler: {type: asha}`

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, v: Any) -> dict:
        v = _as_mapping(cls._prepare(v))
        keys = cls._keys(v)
        for k in v:
            if k not in keys:
                raise Problem("key: " + choice_text(k, keys))
        return v

    @classmethod
    def _prepare(cls, v: Any) -> Any:
        return {cls.shorthand: v} if cls.shorthand and isinstance(v, str) else v

    @classmethod
    def _keys(cls, v: dict) -> tuple:
        return tuple(cls.model_fields)


def _values(v: Any) -> list:
    vals = _as_list(v)
    for x in vals:
        if not (x is None or isinstance(x, (bool, int, float, str))):
            raise Problem(f"got {x!r}; allowed: scalars (number, string, bool, null)")
    if len(set(map(repr, vals))) != len(vals):
        raise Problem(f"duplicate values in {vals!r}; allowed: each value once")
    return vals


def _when(v: Any) -> dict:
    if v is not None and not _as_mapping(v):
        raise Problem("empty condition; allowed: {axis: [values]}")
    return {str(k): _as_list(x, (str(k),)) for k, x in _as_mapping(v).items()}


class ParamSpec(_Section):
    """One ``params:`` entry (a plain list is a choice); the keys allowed depend on its type."""

    type: str
    values: Annotated[Optional[list], BeforeValidator(_values)] = None
    low: Optional[Number] = None
    high: Optional[Number] = None
    step: Optional[Number] = None
    log: bool = False
    when: Annotated[dict[str, list], BeforeValidator(_when)] = Field(default_factory=dict)

    @classmethod
    def _keys(cls, v: dict) -> tuple:
        if v.get("type") is None:
            raise Problem(f"missing; allowed: {', '.join(PARAM_TYPES)}", ("type",))
        return PARAM_KEYS[_choice(v["type"], PARAM_TYPES, ("type",))]

    @classmethod
    def _prepare(cls, v: Any) -> Any:
        if isinstance(v, list):
            return {"type": "choice", "values": v}
        if not isinstance(v, Mapping):
            raise Problem(f"got {v!r}; allowed: a mapping like {{type: uniform, low: 0.1, high: 0.3}} "
                          "or a list")
        return v

    @model_validator(mode="after")
    def _range(self) -> "ParamSpec":
        if self.type == "choice":
            if not self.values:
                raise Problem("a choice needs values; allowed: a non-empty list", ("values",))
            return self
        for b in ("low", "high", "step"):
            if getattr(self, b) is None and b != "step":
                raise Problem(f"missing; allowed: a number (a {self.type} range needs low and high)", (b,))
            if self.type == "int" and getattr(self, b) is not None:
                setattr(self, b, _integer(getattr(self, b), (b,)))
        if not self.low < self.high:
            raise Problem(f"low ({self.low}) must be < high ({self.high}); allowed: low < high")
        self.log = self.type == "loguniform" or self.log
        if self.log and self.low <= 0:
            raise Problem(f"a log range needs low > 0, got {self.low}; allowed: low > 0", ("low",))
        if self.step is not None and self.step <= 0:
            raise Problem(f"got {self.step}; allowed: a number > 0", ("step",))
        if self.step is not None and self.log:
            raise Problem("cannot be combined with a log range; allowed: step or log", ("step",))
        return self

    def to_dict(self) -> dict:
        """The entry as written in a file (``log`` only where it is a key of the type)."""
        return self.model_dump(include={k for k in PARAM_KEYS[self.type]
                                        if k not in ("step", "log", "when") or getattr(self, k)})

    def active(self, assignment: Mapping[str, Any]) -> bool:
        return all(assignment.get(k) in vals for k, vals in self.when.items())


def _algorithm(v: Any) -> str:
    if _choice(v, ALGORITHMS) == "optuna_cmaes" and importlib.util.find_spec("cmaes") is None:
        raise Problem("optuna_cmaes needs the 'cmaes' package (pip install cmaes); allowed without "
                      "it: " + ", ".join(a for a in ALGORITHMS if a != "optuna_cmaes"))
    return v


class Search(_Section):
    algorithm: Annotated[str, BeforeValidator(_algorithm)] = "grid"
    num_samples: Annotated[Optional[Int], Ge(1), Le(MAX_SAMPLES)] = None
    seed: Annotated[Int, Ge(0), Le(MAX_SEED)] = 0

    @model_validator(mode="after")
    def _samples(self) -> "Search":
        n, algo, loc = self.num_samples, self.algorithm, ("num_samples",)
        if algo == "grid" and n is not None:
            raise Problem("grid runs every combination once per seed; allowed: remove num_samples, or "
                          "pick a sampler (random, optuna_tpe, ...)", loc)
        if algo != "grid" and n is None:
            raise Problem(f"required for algorithm {algo}; allowed: an integer in [1, {MAX_SAMPLES}] "
                          "(configurations to sample; each runs once per seed)", loc)
        return self


class Scheduler(_Section):
    """Optional ASHA early stopping: rungs at grace_period * reduction_factor^k < max_t."""

    shorthand = "type"
    # Annotated before-validators run right to left: "missing" is checked first
    type: Annotated[str, OneOf(SCHEDULERS), _required(f"; allowed: {', '.join(SCHEDULERS)}")] = REQUIRED
    time_attr: Annotated[str, OneOf(TIME_ATTRS)] = "step"
    max_t: Optional[Number] = None
    grace_period: Number = 1
    reduction_factor: Annotated[Number, Gt(1)] = 2
    brackets: Annotated[Int, Ge(1)] = 1

    @model_validator(mode="after")
    def _rungs(self) -> "Scheduler":
        max_t, grace = self.max_t, self.grace_period
        if self.type == "asha" and max_t is None:
            raise Problem("required for asha; allowed: a number > 0 (the full budget in time_attr units, "
                          "e.g. train.steps)", ("max_t",))
        if self.type == "asha" and max_t <= 0:
            raise Problem(f"got {max_t}; allowed: a number > 0", ("max_t",))
        if self.type == "asha" and not 0 < grace < max_t:
            raise Problem(f"must be > 0 and < max_t ({max_t}), got {grace}; allowed: a number in "
                          f"(0, {max_t})", ("grace_period",))
        return self


class Resources(_Section):
    cpu: Annotated[Number, Gt(0), Le(4096)] = 1
    gpu: Annotated[Number, Ge(0), Le(1024)] = 0
    workers: Annotated[Int, Ge(1), Le(1024)] = 1


class Wandb(_Section):
    project: Annotated[str, BeforeValidator(lambda v: str(v or "ablate"))] = "ablate"
    mode: Annotated[str, OneOf(WANDB_MODES)] = "auto"
    entity: Any = None


class SeedRange(_Section):
    """``seeds: {min: 3, max: 20, batch: 1}``: sequential seeds 0..max-1, looked at from min on."""

    min: Int
    max: Annotated[Int, Le(MAX_SEEDS)]
    batch: Int = 1

    @model_validator(mode="after")
    def _order(self) -> "SeedRange":
        if not 2 <= self.min <= self.max or self.batch < 1:
            raise Problem(f"got {self.model_dump()}; allowed: 2 <= min <= max and batch >= 1")
        return self


def _seeds(v: Any) -> list[int] | dict[str, int]:
    """Replicate seeds: a list, n (= 0..n-1), or a sequential range {min, max, batch}."""
    if isinstance(v, Mapping):
        return check(SeedRange, v, prefix="seeds.").model_dump()
    if isinstance(v, int) and not isinstance(v, bool):
        if not 1 <= v <= MAX_SEEDS:
            raise Problem(f"got {v}; allowed: an integer n in [1, {MAX_SEEDS}] (= seeds 0..n-1) or a "
                          "list of seeds")
        return list(range(v))
    seeds = _as_list(v)
    if not seeds:
        raise Problem("needs at least one seed; allowed: a list of integers >= 0, or n >= 1")
    if len(seeds) > MAX_SEEDS:
        raise Problem(f"got {len(seeds)} seeds; allowed: at most {MAX_SEEDS}")
    out = [_integer(s) for s in seeds]
    for sd in out:
        if not 0 <= sd <= MAX_SEED:
            raise Problem(f"got {sd}; allowed: integers in [0, {MAX_SEED}]")
    if len(set(out)) != len(out):
        raise Problem(f"duplicate seeds in {out}; allowed: each seed once")
    return out


def _variants(group: str, options: list, loc: tuple = ()) -> list[str]:
    """Options of an axis over config group ``group``: names of conf/<group>/ files, each once."""
    if not options:
        raise Problem(f"needs at least one option; allowed: a list of conf/{group}/ names", loc)
    for i, o in enumerate(options):
        if not isinstance(o, str):
            raise Problem(f"got {o!r}; allowed: config file names (strings)", loc)
        _choice(o, variant_names(group), loc)
        if o in options[:i]:
            raise Problem(f"option {o!r} is listed twice; allowed: each option once", loc)
    return list(options)


def _slots(v: Any) -> dict[str, list[str]]:
    for g in _as_mapping(v):
        if g == "method":
            raise Problem("not a slot; allowed: sweep whole presets with the top-level methods: list",
                          ("method",))
        if g not in SWEEP_GROUPS:
            raise Problem("group: " + choice_text(g, SWEEP_GROUPS))
    return {g: _variants(g, _as_list(o, (g,)), (g,)) for g, o in _as_mapping(v).items()}


def _params(v: Any) -> dict:
    for key in map(str, _as_mapping(v)):
        bare, loc = key.lstrip("+"), (key,)
        if not _KEY_RE.match(key):
            raise Problem("not a Hydra config key; allowed: dotted keys like train.lr or mask.eps_high", loc)
        if bare in GROUPS:
            raise Problem(f"{bare!r} is a config group; allowed: sweep it under slots: (or methods:)", loc)
        if bare in ("seed", "name"):
            raise Problem(f"{bare!r} is set by the sweep; allowed: seeds: for replicates", loc)
    return {str(k): p for k, p in _as_mapping(v).items()}


def _overrides(v: Any) -> list[str]:
    for o in _as_list(v):
        if not isinstance(o, str) or ("=" not in o and not o.startswith("~")):
            raise Problem(f"{o!r} is not a Hydra override; allowed: key=value, +key=value, ~key")
    return _as_list(v)


def _name(v: Any) -> str:
    if not is_slug(v):
        raise Problem(f"got {v!r}; allowed: {SLUG_ALLOWED}")
    return v


def _trainable(v: Any) -> str:
    from ablate.sweep.trainables import resolve

    # the registered function's import path (what the trial processes import), never the file's
    return resolve(v or DEFAULT_TRAINABLE).path


def _output_dir(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise Problem(f"got {v!r}; allowed: a directory path")
    return v


class SearchSpace(_Section):
    """A search-space file, key by key (see the module docstring), validated: the one typed object a
    sweep runs from. ``seeds`` holds the seeds to run (a sequential range's first look) and
    ``seed_range`` the range {min, max, batch}; ``source`` is the file it was read from."""

    name: Annotated[str, BeforeValidator(_name), _required(
        " (the sweep name; it also names the sweep directory); allowed: " + SLUG_ALLOWED)] = REQUIRED
    metric: Annotated[str, _required("; allowed: a reported key to optimise, e.g. eval/pass@1")] = REQUIRED
    mode: Annotated[str, OneOf(MODES)] = "max"
    description: Annotated[str, BeforeValidator(lambda v: str(v or "").strip())] = ""
    trainable: Annotated[str, BeforeValidator(_trainable)] = REQUIRED
    base_overrides: Annotated[list[str], BeforeValidator(_overrides)] = Field(default_factory=list)
    slots: Annotated[dict[str, list[str]], BeforeValidator(_slots)] = Field(default_factory=dict)
    methods: Annotated[list[str], BeforeValidator(lambda v: _variants("method", _as_list(v)) if v is not None
                                                  else [])] = Field(default_factory=list)
    params: Annotated[dict[str, ParamSpec], BeforeValidator(_params)] = Field(default_factory=dict)
    seeds: Annotated[Union[list[int], dict[str, int]], BeforeValidator(_seeds)] = [0]
    search: Search = Field(default_factory=Search)
    scheduler: Annotated[Optional[Scheduler], AfterValidator(lambda s: s if s and s.type == "asha"
                                                             else None)] = None
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: Annotated[Optional[Int], Ge(1)] = None
    max_failures: Annotated[Int, Ge(0)] = 2
    output_dir: Annotated[str, BeforeValidator(_output_dir)] = "runs"
    wandb: Wandb = Field(default_factory=Wandb)
    report: Annotated[ReportSpec, BeforeValidator(parse_report)] = REQUIRED
    claims: Any = None  # the raw list until validate() parses it against the swept axes
    seed_range: Optional[dict[str, int]] = None  # set from seeds:, not a key of the file
    source: Optional[str] = None  # set by validate(), not a key of the file

    @classmethod
    def _keys(cls, v: dict) -> tuple:
        return tuple(k for k in cls.model_fields if k not in ("seed_range", "source"))

    @model_validator(mode="after")
    def _sequential(self) -> "SearchSpace":
        if isinstance(self.seeds, dict):  # sequential seeds: run the first look's
            self.seed_range, self.seeds = self.seeds, list(range(self.seeds["min"]))
        return self

    # -------------------------------------------------------------------------- derived
    @property
    def is_optuna(self) -> bool:
        return self.search.algorithm in OPTUNA_ALGORITHMS

    @property
    def max_t(self) -> float | None:
        return self.scheduler.max_t if self.scheduler else None

    def categorical_axes(self) -> list[tuple[str, list]]:
        """(axis name, options) for the config-group axes, in override order."""
        axes: list[tuple[str, list]] = [("method", list(self.methods))] if self.methods else []
        return axes + [(g, list(self.slots[g])) for g in SWEEP_GROUPS if g in self.slots]

    def run_overrides(self) -> list[str]:
        """base_overrides plus what the trial resources imply: with ``resources.workers`` > 1 each
        trial is a Ray Train run of that many workers with ``cpu``/``gpu`` each."""
        r = self.resources
        if r.workers <= 1:
            return list(self.base_overrides)
        return list(self.base_overrides) + [f"resources.workers={r.workers}",
                                            f"resources.cpu_per_worker={r.cpu:g}",
                                            f"resources.gpu_per_worker={r.gpu:g}"]

    def planned_runs(self, specs: list[dict] | None) -> int:
        """Runs the sweep plans: its trials (grid/random, ``specs``), or proposals x seeds (Optuna)."""
        return len(specs) if specs is not None else int(self.search.num_samples or 0) * len(self.seeds)

    def to_dict(self) -> dict:
        """The space as a file that validates back to it (the sweep dir's copy, compared on resume)."""
        d = {**self.model_dump(exclude={"params", "report", "claims", "seed_range", "source"}),
             "params": {k: p.to_dict() for k, p in self.params.items()},
             "seeds": dict(self.seed_range) if self.seed_range else list(self.seeds),
             "search": self.search.model_dump(exclude_none=True),
             "report": self.report.to_dict() if self.report.metrics else None,
             "claims": [c.to_dict() for c in self.claims or []]}
        return {k: v for k, v in d.items() if v or k not in ("description", "report", "claims")}


def validate(data: Any, source: str | None = None) -> SearchSpace:
    """Check a parsed search-space mapping; raise one-line ConfigErrors; return the model."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"search space{f' {source}' if source else ''}: got "
                          f"{type(data).__name__}; allowed: a YAML mapping at the top level")
    from ablate.config import check_interpolations

    check_interpolations(data, "search space")  # no ${oc.env:...}: a shared file is data
    space = check(SearchSpace, data, name="search space")
    space.source = source
    axes = _check_params(space)
    space.claims = parse_claims(data.get("claims"), axes)
    _check_base_overrides(space)
    return space


def _check_params(space: SearchSpace) -> dict[str, list]:
    """A grid crosses only choice params; ``when`` conditions name categorical axes declared
    before the parameter. Returns every categorical axis (config groups, then choice params) with
    its options."""
    seen: dict[str, list] = {a: opts for a, opts in space.categorical_axes()}
    for key, p in space.params.items():
        if p.type != "choice" and space.search.algorithm == "grid":
            raise ConfigError(f"params.{key}: grid search crosses only choice params; allowed: a "
                              f"{p.type} range needs a sampler (search.algorithm: random, "
                              f"optuna_tpe, optuna_random)")
        for axis, vals in p.when.items():
            if axis not in seen:
                raise choice_error(f"params.{key}.when: axis", axis, list(seen) or ["(none swept)"])
            for v in vals:
                if v not in seen[axis]:
                    raise choice_error(f"params.{key}.when.{axis}", v, seen[axis])
        if p.type == "choice":
            seen[key] = list(p.values or [])
    return seen


def _check_base_overrides(space: SearchSpace) -> None:
    """base_overrides may not set what the sweep varies, nor seed/name (set per trial)."""
    swept = {a for a, _ in space.categorical_axes()} | set(space.params)
    for o in space.base_overrides:
        k = o.split("=", 1)[0].lstrip("+~")
        if k in swept:
            raise ConfigError(f"base_overrides: {o!r} sets {k!r}, which the sweep varies; allowed: "
                              f"one of them")
        if k in ("seed", "name"):
            raise ConfigError(f"base_overrides: {o!r}: the sweep sets {k} per trial; allowed: other keys"
                              + (" (use seeds:)" if k == "seed" else ""))


def load_search_space(path: str | Path, *, extra_overrides: Iterable[str] = (),
                      name: str | None = None, output_dir: str | None = None) -> SearchSpace:
    """Read and validate a search-space YAML; CLI overrides are appended to base_overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space: file not found: {path}; allowed: a search-space YAML file")
    from ablate.spec.yaml import load_file

    data = load_file(path, f"search space {path}")
    if isinstance(data, Mapping):
        data = {**data, **{k: v for k, v in (("name", name), ("output_dir", output_dir)) if v}}
        base = data.get("base_overrides")
        if extra_overrides:  # after the file's own (a scalar or null is a list of one or none)
            data["base_overrides"] = [*(base if isinstance(base, (list, tuple)) else
                                        [] if base is None else [base]), *extra_overrides]
    return validate(data, source=str(path))


# ------------------------------------------------------------------------------- expansion
def fmt_value(v: Any) -> str:
    """A value as text for combo keys (short, stable)."""
    if isinstance(v, float):
        return format(v, ".6g")
    return hydra_value(v) if v is None or isinstance(v, bool) else str(v)


def hydra_value(v: Any) -> str:
    """A scalar as a Hydra override value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if _PLAIN_STR_RE.match(s) and s.lower() not in ("true", "false", "null", "none", "nan", "inf"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def assignment_overrides(assignment: Mapping[str, Any]) -> list[str]:
    """Hydra overrides of one assignment: the method preset first, then slots, then params."""
    groups = [f"{g}={assignment[g]}" for g in ("method", *SWEEP_GROUPS) if g in assignment]
    return groups + [f"{k}={hydra_value(v)}" for k, v in assignment.items()
                     if k != "method" and k not in GROUPS]


def combo_key(assignment: Mapping[str, Any]) -> str:
    """The string key of a slot/param combination (seed excluded): 'mask=none,train.lr=0.0003'."""
    parts = [o.split("=", 1) for o in assignment_overrides(assignment)]
    shown = [f"{k}={fmt_value(assignment[k]) if k in assignment else v}" for k, v in parts]
    return ",".join(shown) or "base"


def grid_assignments(space: SearchSpace) -> list[dict]:
    """Cross product of categorical axes and choice params, built in canonical order (axes, then
    params as declared); conditional params only where active."""
    combos: list[dict] = [{}]
    for axis, opts in space.categorical_axes():
        combos = [{**c, axis: o} for c in combos for o in opts]
    for key, p in space.params.items():
        combos = [x for c in combos
                  for x in ([{**c, key: v} for v in p.values or []] if p.active(c) else [c])]
    first: dict[str, dict] = {}  # values equal to 6 digits share a combo key
    for c in combos:
        first.setdefault(combo_key(c), c)
    return list(first.values())


def tune_domain(p: ParamSpec):
    """The Ray Tune search domain of a param (tune.choice / uniform / loguniform / q* / randint)."""
    from ray import tune

    if p.type == "choice":
        return tune.choice(list(p.values or []))
    lo, hi = float(p.low), float(p.high)  # type: ignore[arg-type]
    if p.type == "int":
        if p.log:
            return tune.lograndint(int(lo), int(hi) + 1)  # upper bound exclusive
        return tune.qrandint(int(lo), int(hi), int(p.step or 1))  # upper bound inclusive
    if p.log:  # never with a step (ParamSpec refuses the pair)
        return tune.loguniform(lo, hi)
    return tune.quniform(lo, hi, p.step) if p.step else tune.uniform(lo, hi)


def random_assignments(space: SearchSpace) -> list[dict]:
    """``num_samples`` draws by Ray Tune's own sampler (its domains and variant generator, seeded
    by ``search.seed``), drawn up front so each (draw, seed) is a planned trial with a stable key;
    a conditional param is kept only where its ``when`` holds."""
    import numpy as np
    from ray import tune
    from ray.tune.search.variant_generator import generate_variants

    spec: dict[str, Any] = {axis: tune.choice(opts) for axis, opts in space.categorical_axes()}
    spec.update({key: tune_domain(p) for key, p in space.params.items()})
    rs = np.random.RandomState(space.search.seed)
    out = []
    for _ in range(int(space.search.num_samples or 0)):
        _, cfg = next(generate_variants({"config": spec}, random_state=rs))
        drawn = {k: v.item() if isinstance(v, np.generic) else v for k, v in cfg["config"].items()}
        a: dict[str, Any] = {axis: drawn[axis] for axis, _ in space.categorical_axes()}
        for key, p in space.params.items():
            if p.active(a):
                a[key] = drawn[key]
        out.append(a)
    return out


def plan_trials(space: SearchSpace) -> list[dict] | None:
    """The trial specs of grid/random searches ({key, combo, assign, seed}); None for Optuna.

    Seeds are the outer loop, so the first replicate of every combination runs first.
    """
    if space.is_optuna:
        return None
    assigns = grid_assignments(space) if space.search.algorithm == "grid" else random_assignments(space)
    specs = []
    seen: set[str] = set()
    for seed in space.seeds:
        for i, a in enumerate(assigns):
            combo = combo_key(a)
            key = run_key(combo, seed)
            if key in seen:  # random draws can repeat a categorical-only combination
                key = f"{key}#{i}"
            seen.add(key)
            specs.append({"key": key, "combo": combo, "assign": a, "seed": seed})
    return specs


class OptunaSpace:
    """Define-by-run space for OptunaSearch: categorical axes, then params (conditional via when).

    A module-level class holding plain data (the validated param models), so Tune can pickle it
    into its searcher state.
    """

    def __init__(self, space: SearchSpace):
        self.categorical = space.categorical_axes()
        self.params = list(space.params.items())

    def __call__(self, trial) -> dict:
        chosen = {axis: trial.suggest_categorical(axis, opts) for axis, opts in self.categorical}
        inactive: dict[str, Any] = {}
        for key, p in self.params:
            if not p.active(chosen):
                inactive[key] = None  # present (as None) so every trial has every column
            elif p.type == "choice":
                chosen[key] = trial.suggest_categorical(key, p.values)
            elif p.type == "int":
                chosen[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1),
                                                log=p.log)
            else:
                chosen[key] = trial.suggest_float(key, float(p.low), float(p.high), log=p.log,
                                                  step=p.step)
        return inactive


def active_assignment(config: Mapping[str, Any], conds: Mapping[str, Mapping[str, list]]) -> dict:
    """A trial config without the params whose ``when`` does not hold (Optuna fills them with None)."""
    out = dict(config)
    for key, when in conds.items():
        if key in out and not all(out.get(a) in vals for a, vals in when.items()):
            del out[key]
    return out
