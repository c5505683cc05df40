"""Compose a run's config from conf/ with the Hydra compose API (scoped: safe inside Ray workers),
then validate it against the typed schema (ablate/schema.py) before anything is created."""

from __future__ import annotations

import copy
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from ablate.errors import ConfigError, choice_error
from ablate.registry import conf_dir, plain

GROUPS = ("mask", "denominator", "advantage", "likelihood", "aggregation", "regularizers",
          "objective", "pipeline", "task", "model", "rollout", "tracker", "method")


def _group_options(group: str) -> list[str]:
    d = conf_dir() / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


_INTERP = re.compile(r"\$\{")
_REF = re.compile(r"\.*[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def check_interpolation(value: str, field: str) -> None:
    """A user value may reference another config key (``${rollout.max_new_tokens}``) and nothing
    else: no resolver (``${oc.env:WANDB_API_KEY}`` would copy a secret into config.yaml, the run
    summary and the W&B run), no nesting."""
    for m in _INTERP.finditer(value):
        end = value.find("}", m.end())
        inner = value[m.end():end] if end >= 0 else value[m.end():]
        if end < 0 or not _REF.fullmatch(inner):
            shown = value[m.start():end + 1] if end >= 0 else value[m.start():]
            raise ConfigError(f"{field}: interpolation {shown[:60]!r} is not allowed; allowed: "
                              "${a.b} references to other config keys (no resolvers such as "
                              "oc.env: a config is data and never reads the environment)")


def check_interpolations(data: Any, field: str) -> None:
    """``check_interpolation`` on every string (keys included) of a parsed YAML document."""
    if isinstance(data, str):
        check_interpolation(data, field)
    elif isinstance(data, dict):
        for k, v in data.items():
            check_interpolations(k, field)
            check_interpolations(v, f"{field}.{k}")
    elif isinstance(data, (list, tuple)):
        for i, v in enumerate(data):
            check_interpolations(v, f"{field}[{i}]")


def check_overrides(overrides: Sequence[str]) -> None:
    """Fail with one line for ``group=unknown``, an unknown schema key (``train.stpes=3``), a
    resolver in a value, or a list of group choices (``method=[grpo,dapo]``: a sweep's job)
    before Hydra prints its multi-line error."""
    from ablate.schema import check_key

    for ov in overrides:
        if not isinstance(ov, str):
            raise ConfigError(f"override: got {ov!r}; allowed: key=value text")
        check_interpolation(ov, f"override {ov[:60]!r}")
        key, sep, val = ov.lstrip("+~").partition("=")
        if key.split("/")[0].split(".")[0].split("@")[0] == "hydra":
            raise ConfigError(f"{key}: Hydra's own settings (search path, output dirs) are not "
                              "run config; allowed: the keys of conf/config.yaml and its groups")
        if "." in key:
            check_key(key)
        if sep and key in GROUPS and val.strip().startswith("["):
            raise ConfigError(f"{key}: got {val!r}; allowed: one of {', '.join(_group_options(key))} "
                              "(one run takes one choice; sweep several with `ablate sweep`)")
        if sep and key in GROUPS and val and val not in _group_options(key) and "," not in val:
            raise choice_error(key, val, _group_options(key))
        if not sep and ov.startswith("~") and key in ROOT_REQUIRED:
            raise ConfigError(f"{ov}: {key} cannot be removed; allowed: set its fields "
                              f"({key}.<field>=value)")


ROOT_REQUIRED = ("train", "eval", "model", "rollout", "tracker", "task", "resources", "seed",
                 "device")


def check_output_dir(path: Any, field: str, allow_outside: bool) -> Path:
    """An output directory lies inside the working directory unless the user allowed otherwise
    on the command line (``--allow-outside``); returns it resolved."""
    p = Path(str(path)).expanduser()
    resolved = (Path.cwd() / p).resolve()
    if not allow_outside:
        cwd = Path.cwd().resolve()
        if resolved != cwd and cwd not in resolved.parents:
            raise ConfigError(f"{field}: got {str(path)!r}, outside the working directory {cwd}; "
                              "allowed: a path inside it, or pass --allow-outside")
    return resolved


def register_defaults() -> None:
    """Put the schema's defaults into Hydra's ConfigStore: ``ablate_root`` (top-level scalars,
    train, eval; first in conf/config.yaml's defaults) and ``model/schema`` (conf/model/*.yaml
    extend it). The schema is then the one source of defaults."""
    from hydra.core.config_store import ConfigStore

    from ablate.schema import model_defaults, root_defaults

    cs = ConfigStore.instance()
    cs.store(name="ablate_root", node=root_defaults())
    cs.store(group="model", name="schema", node=model_defaults())


_BASE_CACHE: "OrderedDict[tuple, DictConfig]" = OrderedDict()
_BASE_CACHE_SIZE = 32


def _is_group_override(ov: str) -> bool:
    """``mask=none``, ``+pipeline=dapo``, ``~regularizers``, ``hydra.*``: they shape the defaults
    list. Everything else (``train.lr=3e-4``, ``mask.eps_low=0.3``) is a value override."""
    key = ov.lstrip("+~").partition("=")[0].split("@")[0]
    return key in GROUPS or key.startswith("hydra") or (conf_dir() / key).is_dir()


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved run config; ``cfg.choices`` records which file each group came from.

    Hydra composes the defaults list (group choices) and then applies the value overrides to the
    merged config; the composed config of each set of group choices is cached, and the value
    overrides are applied to a copy with Hydra's own parser and override code, so repeated
    composes (a sweep preflight over every trial) cost a copy instead of a full compose."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    check_overrides(overrides)
    register_defaults()
    groups = [o for o in overrides if _is_group_override(o)]
    values = [o for o in overrides if not _is_group_override(o)]
    try:
        key = (str(conf_dir()), tuple(groups))
        base = _BASE_CACHE.get(key)
        if base is None:
            base = _compose_groups(groups)
            _BASE_CACHE[key] = base
            while len(_BASE_CACHE) > _BASE_CACHE_SIZE:
                _BASE_CACHE.popitem(last=False)
        else:
            _BASE_CACHE.move_to_end(key)
        cfg = copy.deepcopy(base)
        if values:
            from hydra._internal.config_loader_impl import ConfigLoaderImpl
            from hydra.core.override_parser.overrides_parser import OverridesParser

            parsed = OverridesParser.create().parse_overrides(values)
            ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split())
        m = re.match(r"Could not override '([^']+)'", msg)
        if m:
            raise ConfigError(f"{m.group(1)}: not a key of the composed config; allowed: a key "
                              f"it has (see conf/), or +{m.group(1)}=... to add one") from None
        raise ConfigError(f"config: {msg}") from None
    return cfg


def _compose_groups(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in GROUPS}
    with open_dict(cfg):
        del cfg["hydra"]
        cfg["choices"] = choices
    return cfg


def to_plain(cfg: DictConfig) -> dict:
    return plain(cfg)


def _plain_checked(cfg: Any) -> dict:
    """Resolved plain dict; a missing mandatory value (``???``) is a one-line error naming it."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if not isinstance(cfg, (DictConfig, dict)):
        raise ConfigError(f"config: got {cfg!r}; allowed: a mapping")
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        key = e.full_key or "config"
        raise ConfigError(f"{key}: required value is missing; allowed: set {key}=...") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{e.full_key or 'config'}: {' '.join(str(e).split())[:300]}") from None


def validate_config(cfg: Any, *, build: bool = True, cuda_available: Optional[bool] = None,
                    task_cache: Optional[dict] = None) -> Any:
    """Check a composed run config completely; raise a one-line ConfigError for the first problem.

    The schema checks types and ranges of every plain field; with ``build`` the components are
    built (slots, objective, pipeline stages, the task and its data) and the rollout engine's
    parameters are checked against its signature: cheap, and nothing is written. The device must
    exist. Returns the task built (or None); ``task_cache`` (a dict) reuses tasks built from the
    same task config (a sweep preflight checks many trials of one data set)."""
    from ablate.schema import RunConfig, check

    data = _plain_checked(cfg)
    check_targets(data)
    run = check(RunConfig, data)
    dev = run.device
    if dev.startswith("cuda"):
        if cuda_available is None:
            import torch
            cuda_available = torch.cuda.is_available()
        if not cuda_available:
            raise ConfigError(f"device: got {dev!r}, but CUDA is not available here; "
                              "allowed: cpu, auto")
        if ":" in dev:
            import torch
            n = torch.cuda.device_count()
            if int(dev.split(":")[1]) >= n:
                raise ConfigError(f"device: got {dev!r}; allowed: cpu, auto, cuda, "
                                  f"cuda:0..cuda:{n - 1} ({n} GPU(s) here)")
    mp = run.model.path
    if mp is not None and mp.startswith(("/", ".", "~")) and \
            not (Path(mp).expanduser() / "config.json").is_file():
        raise ConfigError(f"model.path: got {run.model.path!r}, which holds no config.json; "
                          "allowed: a local Hugging Face checkpoint directory, or null (tiny model)")
    gpus = run.resources.gpu_per_worker
    if gpus > 0 and not _on_cuda("cuda", cuda_available):
        raise ConfigError(f"resources.gpu_per_worker: got {gpus:g}, but CUDA is not available "
                          "here; allowed: 0")
    if run.model.dtype == "float16" and not _on_cuda(dev, cuda_available):
        raise ConfigError(f"model.dtype: got 'float16' with device={dev!r}; allowed on CPU: "
                          "float32, bfloat16 (float16 needs a GPU)")
    if not build:
        return None
    import json

    from ablate.tasks import build_task
    from ablate.train.components import build_algorithm

    dcfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(data)
    build_algorithm(dcfg)
    check_rollout(data["rollout"])
    key = json.dumps(data["task"], sort_keys=True, default=str)
    task = task_cache.get(key) if task_cache is not None else None
    if task is None:
        task = build_task(data["task"])
        if task_cache is not None:
            task_cache[key] = task
    check_task_fits(task, run)
    check_group_relative(data["advantage"], run)
    check_context(task, run)
    return task


def _on_cuda(dev: str, cuda_available: Optional[bool]) -> bool:
    if dev == "cpu":
        return False
    if cuda_available is None:
        import torch
        cuda_available = torch.cuda.is_available()
    return bool(cuda_available)


def check_group_relative(advantage_cfg: Any, run: Any) -> None:
    """A group baseline over one sample per prompt is no baseline (Â = the raw reward or 0)."""
    from ablate.spec.targets import resolve

    cls = resolve("advantage", advantage_cfg.get("_target_"), "advantage._target_")
    if getattr(cls, "group_relative", False) and run.train.group_size < 2:
        raise ConfigError(f"train.group_size: got {run.train.group_size} with the group-relative "
                          f"advantage {cls.__name__}; allowed: >= 2 (or a batch-level advantage "
                          "such as advantage=reinforce_pp)")


def check_context(task: Any, run: Any) -> None:
    """Held-out prompts exist in the number asked for, and each prompt plus the generation
    budget fits the tiny char-level model's context."""
    from ablate.rollout import resolve_budget

    try:
        probs = task.eval_problems(run.eval.num_prompts)
    except ConfigError as e:
        raise ConfigError(f"{e}; allowed: eval.num_prompts <= the task's held-out set") from None
    if run.model.path is not None or getattr(task, "prompt_format", "raw") != "raw" or not probs:
        return
    budget = resolve_budget(run.rollout.max_new_tokens, task)  # the one budget rule
    new = budget.tokens
    field = budget.source if budget.source != "default" else "rollout.max_new_tokens"
    longest = max(len(p.prompt) for p in probs)
    ctx = run.model.max_position_embeddings
    if longest + new + 1 > ctx:
        raise ConfigError(f"{field}: {new} new tokens after a {longest}-character "
                          f"prompt exceed model.max_position_embeddings={ctx}; allowed: "
                          f"max_new_tokens <= {max(0, ctx - longest - 1)}, or raise "
                          "model.max_position_embeddings")


def check_targets(data: Any, path: str = "") -> None:
    """Every ``_target_`` anywhere in the config is on the allow-list (ablate.* or a --plugins
    module), including ones that this run would never build (a critic the method does not use,
    a stray ``+pipeline.x``): a config naming ``os.system`` is an error, not something dormant."""
    from ablate.spec.targets import check_path

    if isinstance(data, dict):
        for k, v in data.items():
            here = f"{path}.{k}" if path else str(k)
            if k == "_target_":
                check_path(v, here)
            else:
                check_targets(v, here)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            check_targets(v, f"{path}[{i}]")


def check_rollout(rollout_cfg: Any) -> None:
    """Build the engine: the registry checks its parameters against the class signature and the
    engine its own (vLLM: a GPU and the package). Engines load no model when built."""
    from ablate.rollout import build_engine

    build_engine(rollout_cfg)


def check_task_fits(task: Any, run: Any) -> None:
    """The task's longest training sequence (prompt + demonstration) must fit the tiny model's
    context (char tokenizer: one token per character, plus BOS and EOS)."""
    longest = getattr(task, "longest_example", None)
    if run.model.path is not None or longest is None:
        return
    found = longest()
    if found is None:
        return
    row, n_chars = found
    ctx = run.model.max_position_embeddings
    if n_chars + 2 > ctx:
        raise ConfigError(f"task: row {row} has {n_chars} characters of prompt + demonstration, "
                          f"over model.max_position_embeddings={ctx} of the char-level tiny model; "
                          f"allowed: raise model.max_position_embeddings, or set task.max_chars "
                          f"with task.on_overlong=truncate|skip")
