"""The typed schema of a run's config: one pydantic model per config group, the single source of
defaults (``ablate.config.register_defaults`` hands them to Hydra, so the YAML files hold only what a
variant changes), types and ranges (strict: ``train.steps=2.5`` is an error, not a coercion; checked
by ``ablate.config.check_run``). Component groups (slots, objective, pipeline, critic, task) are
checked by the registry when they are built; the schema only requires their ``_target_`` mappings.
"""

from __future__ import annotations

import os
import re
import typing
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ablate.errors import ConfigError
from ablate.spec.translate import FieldError

MAX_SEED = 2**32 - 1  # numpy / torch seeds
MAX_ROWS = 65536  # prompts, group sizes, eval prompts: beyond this a typo, not an experiment
THREADS_PER_CORE = 4
SLUG_ALLOWED = "letters, digits, '.', '_', '-' (no '/', no '..', not starting with '.' or '-')"
_SLUG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def is_slug(name: object) -> bool:
    """A run or sweep name that is safe as one directory name."""
    return isinstance(name, str) and bool(_SLUG.match(name)) and ".." not in name


# strict: no "3" → 3, no 2.5 → 2, no true → 1; floats must be finite
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, validate_default=True)
DEVICES = ("auto", "cpu", "cuda")


class Group(BaseModel):
    """A config group: every field typed and ranged, unknown keys rejected."""

    model_config = _STRICT


class Metrics(Group):
    entropy: bool = Field(True, description="log train/entropy (one extra reduction per token)")
    grad_var: bool = Field(True, description="log train/grad_var over the microbatch gradients")


class TrainConfig(Group):
    steps: int = Field(30, ge=1, le=10**7, description="RL steps (one rollout batch each)")
    prompts_per_step: int = Field(32, ge=1, le=MAX_ROWS)
    group_size: int = Field(8, ge=1, le=MAX_ROWS, description="G samples per prompt")
    epochs: int = Field(1, ge=1, description="passes over each rollout batch")
    minibatches: int = Field(1, ge=1, description="optimizer steps per epoch")
    microbatches: int = Field(2, ge=1, description="gradient-accumulation chunks per minibatch "
                                                   "(also feed train/grad_var)")
    lr: float = Field(1.0e-4, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2,
                               description="AdamW betas, two numbers in [0, 1)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    skip_grad_norm: Optional[float] = Field(None, gt=0, description="skip the step when the "
                                            "pre-clip norm exceeds this (HPT guard); null = never")
    scheduler: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="LR schedule over optimizer steps (transformers.get_scheduler)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 over N optimizer steps")
    log_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(10, ge=0, description="sweep trials: a Ray Tune checkpoint every "
                                  "N steps and at the last one; 0 = the last one only")
    save_model: Literal["final", "best", "none"] = Field(
        "none", description="an HF checkpoint in <run_dir>/model that model.path loads: after the "
        "last step, or at the eval with the highest eval/pass@1")
    metrics: Metrics = Field(default_factory=Metrics)

    @model_validator(mode="after")
    def _betas_in_range(self) -> "TrainConfig":
        for i, b in enumerate(self.betas):
            if not 0.0 <= b < 1.0:
                raise FieldError(("betas", i), b, "a number in [0, 1)")
        rows = self.prompts_per_step * self.group_size
        if self.minibatches > rows:
            raise FieldError(("minibatches",), self.minibatches,
                              f"<= train.prompts_per_step x train.group_size = {rows} rows")
        if self.minibatches * self.microbatches > rows:
            raise FieldError(("microbatches",), self.microbatches,
                              f"<= {rows // self.minibatches} (rows per minibatch: {rows} rows / "
                              f"{self.minibatches} minibatch(es))")
        if self.warmup_steps > self.steps:
            raise FieldError(("warmup_steps",), self.warmup_steps,
                              f"<= train.steps = {self.steps} (a warm-up longer than the run)")
        return self


class EvalConfig(Group):
    every: int = Field(10, ge=0, description="eval Pass@k every N steps (and before step 0 and "
                                             "after the last); 0 = only before and after")
    num_prompts: int = Field(64, ge=1, le=MAX_ROWS, description="held-out prompts")
    n: int = Field(8, ge=1, le=MAX_ROWS, description="samples per prompt (Pass@k for k = 1, 2, 4, ... <= n)")
    temperature: Optional[float] = Field(None, gt=0, description="null = rollout temperature")
    num_samples_logged: int = Field(8, ge=0, description="generations kept in samples.jsonl")
    cache: bool = Field(True, description="in a sweep, reuse an eval whose inputs (weights, prompts, "
                        "sampling seed, settings) another run of the sweep already evaluated")


class ResourcesConfig(Group):
    """Workers of one run: ``workers > 1`` makes it a Ray Train TorchTrainer of that many."""

    workers: int = Field(1, ge=1, le=1024)
    cpu_per_worker: float = Field(1, gt=0)
    gpu_per_worker: float = Field(0, ge=0)
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="fsdp = FSDP2 fully_shard, for "
                                             "models that do not fit on one device")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto = nccl with GPUs, "
                                                     "else gloo")


class WarmStartConfig(Group):
    """SFT on the task's demonstrations until the expected pass@1 (T=1) on a fixed probe of
    ``probe_size`` training problems reaches ``target_pass1``, checked every ``check_every`` steps;
    ``steps`` is the cap. Stopping on a target pins the RL starting point across seeds: on 2-digit
    addition, 300 fixed steps gave sampled pass@1 0.06-0.82 over seeds 0-3, the target 0.27-0.37."""

    steps: int = Field(800, ge=0, description="cap on SFT steps; 0 = no warm start")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3.0e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    min_lr_ratio: float = Field(1.0, ge=0, le=1, description="1.0 = constant after warmup; < 1 = "
                                                             "cosine decay over steps")
    max_grad_norm: Optional[float] = Field(1.0, gt=0, description="null = no clipping")
    target_pass1: Optional[float] = Field(0.3, gt=0, le=1, description="null = run exactly steps")
    check_every: int = Field(10, ge=1)
    probe_size: int = Field(256, ge=1)
    cache: bool = Field(True, description="cache under $ABLATE_CACHE/warmstart/<hash>")
    on_checkpoint: bool = Field(False, description="also warm-start a model loaded from path")


class LoraSchema(Group):
    """LoRA via peft: only the adapters train; the frozen base is the KL reference."""

    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: Union[str, list[str]] = "all-linear"


class ModelConfig(Group):
    """Tiny Llama built from config with a character-level tokenizer over the task's alphabet
    (~0.66M params), warm-started by a short cached SFT; ``path`` loads a local HF checkpoint
    instead (the warm start is then skipped unless ``warm_start.on_checkpoint``)."""

    seed: Optional[int] = Field(0, ge=0, le=MAX_SEED, description="initial weights + warm start; null = the "
                                "run's seed (fixed by default: seeds replicate RL from one base)")
    arch: Literal["llama", "qwen2"] = "llama"
    path: Optional[str] = Field(None, description="local HF checkpoint directory")
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: Optional[int] = Field(None, ge=1, description="null = num_heads (no GQA)")
    intermediate_size: int = Field(256, ge=1)
    max_position_embeddings: int = Field(128, ge=1)
    tie_word_embeddings: bool = True
    rope_theta: float = Field(10000.0, gt=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    gradient_checkpointing: bool = Field(False, description="activation checkpointing (after the "
                                         "warm start)")
    lora: Optional[LoraSchema] = Field(None, description="e.g. {r: 8, alpha: 16, dropout: 0.0, "
                                       "target_modules: all-linear}; null = full fine-tuning")
    warm_start: Optional[WarmStartConfig] = Field(default_factory=WarmStartConfig,
                                                  description="null = no warm start")

    @model_validator(mode="after")
    def _heads(self) -> "ModelConfig":
        if self.hidden_size % self.num_heads:
            raise FieldError(("num_heads",), self.num_heads,
                              f"a divisor of model.hidden_size={self.hidden_size}")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise FieldError(("num_kv_heads",), self.num_kv_heads,
                              f"null or a divisor of model.num_heads={self.num_heads}")
        return self


class RolloutConfig(Group):
    """Sampling parameters every engine takes; engine-specific ones (vLLM's
    ``gpu_memory_utilization``...) are checked against the engine's signature by the registry."""

    model_config = ConfigDict(_STRICT, extra="allow")
    target: str = Field(alias="_target_")
    temperature: float = Field(gt=0, description="sampling temperature of the rollouts")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = off")
    max_new_tokens: Optional[int] = Field(None, ge=1, description="generation budget; null = the "
                                   "task's (ablate.rollout.resolve_budget: when set, it wins)")
    batch_size: Optional[int] = Field(None, ge=1, description="rows per generate call; null = all")
    logprob_batch_size: Optional[int] = Field(None, ge=1, description="rows per log-prob forward")


class WandbConfig(Group):
    enabled: bool = False
    project: str = Field("ablate", min_length=1)
    entity: Optional[str] = None
    mode: Literal["auto", "offline", "online", "disabled"] = "auto"
    group: Optional[str] = None
    job_type: Optional[str] = None
    tags: list[str] = Field(default_factory=list)


class TrackerConfig(Group):
    wandb: WandbConfig = Field(default_factory=WandbConfig)


class Component(BaseModel):
    """A built component (slot variant, stage, task): ``_target_`` plus its class's parameters,
    which the registry checks against the class signature when it builds it."""

    model_config = ConfigDict(strict=True, extra="allow")
    target: str = Field(alias="_target_", min_length=1)


class RunConfig(Group):
    """The root of a composed run config."""

    name: Optional[str] = Field(None, min_length=1, max_length=128,
                                description="run name; default <method>-<task>-s<seed>")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = Field("cpu", description="cpu | cuda | cuda:N | auto")
    run_dir: Optional[str] = Field(None, description="default runs/<name>-<timestamp>")
    threads: Optional[int] = Field(None, ge=1, le=1024, description="torch intra-op threads; "
                                   "null = torch default; at most 4 per core of the machine")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    rollout: RolloutConfig
    tracker: TrackerConfig
    task: Component
    mask: Component
    denominator: Component
    advantage: Component
    likelihood: Component
    aggregation: Component
    regularizers: dict[str, Component] = Field(default_factory=dict)
    objective: dict[str, Any] = Field(default_factory=dict)  # checked by build_objective
    pipeline: dict[str, Any] = Field(default_factory=dict)  # checked by build_stages
    critic: dict[str, Any] = Field(default_factory=dict)  # value model; checked by build_critic
    method: Optional[dict[str, Any]] = None  # preset metadata (title, paper, ...), see catalog
    choices: dict[str, Optional[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _device(self) -> "RunConfig":
        d = self.device
        if d not in DEVICES and not (d.startswith("cuda:") and d[5:].isdigit()):
            raise FieldError(("device",), d, "auto, cpu, cuda, cuda:N")
        if self.name is not None and not is_slug(self.name):
            raise FieldError(("name",), self.name, SLUG_ALLOWED)
        cap = THREADS_PER_CORE * (os.cpu_count() or 1)
        if self.threads is not None and self.threads > cap:
            raise FieldError(("threads",), self.threads,
                              f"null or an integer in [1, {cap}] ({THREADS_PER_CORE} per core, "
                              f"{os.cpu_count()} core(s) here)")
        w = self.resources.workers
        if w > self.train.prompts_per_step:
            raise FieldError(("resources", "workers"), w,
                              f"<= train.prompts_per_step = {self.train.prompts_per_step} (every "
                              "worker needs prompts)")
        if w > self.eval.num_prompts:
            raise FieldError(("resources", "workers"), w,
                              f"<= eval.num_prompts = {self.eval.num_prompts}")
        return self


# Defaults that Hydra sees (ConfigStore): the root groups without component groups
ROOT_SCALARS = ("name", "seed", "device", "run_dir", "threads")


def root_defaults() -> dict:
    """The root config's defaults (top-level scalars, resources, train, eval) from the schema."""
    out: dict[str, Any] = {k: RunConfig.model_fields[k].default for k in ROOT_SCALARS}
    return {**out, "resources": _dump(ResourcesConfig()), "train": _dump(TrainConfig()),
            "eval": _dump(EvalConfig())}


def model_defaults() -> dict:
    return _dump(ModelConfig())


def _dump(m: BaseModel) -> dict:
    return m.model_dump(mode="python", by_alias=True)


SCHEMA_GROUPS: dict[str, type[BaseModel]] = {"train": TrainConfig, "eval": EvalConfig,
                                             "model": ModelConfig}


def check_key(key: str) -> None:
    """A dotted override key into a schema group (``train.stpes``) must name a field: one line
    with the fields allowed there, before Hydra's own multi-line message."""
    parts = key.split(".")
    cur: Optional[type[BaseModel]] = SCHEMA_GROUPS.get(parts[0])
    for i, part in enumerate(parts[1:], 1):
        if cur is None:
            return
        if part not in cur.model_fields:
            parent = ".".join(parts[:i])
            raise ConfigError(f"{parent}: unknown key {part!r}; allowed: "
                              + ", ".join(cur.model_fields))
        ann = cur.model_fields[part].annotation
        cur = next((c for c in (ann, *typing.get_args(ann))
                    if isinstance(c, type) and issubclass(c, BaseModel)), None)
