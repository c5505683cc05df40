"""Counterfactual estimator probe: the gradients of several estimators (slot choices, methods) at
one fixed policy on the *same* rollout batches, and their variance and bias against a many-sample
reference gradient. Exact pairing, no trajectory confound (DESIGN §7; issue 16 item 6): a claim
such as "OPO lowers gradient variance" is a property of the estimator at a fixed policy, not of
two diverging training runs.

Procedure. Each arm is the base overrides plus its own (e.g. ``advantage=opo``), composed and
validated before anything is built. Every arm builds its own Trainer (same seed and model config:
the same warm start or ``model.path`` checkpoint; the weights are checked equal). B rollout
batches are sampled once, by the first arm's trainer at the fixed weights (its rollout, task and
pipeline: arms may not change those). For every batch and arm: the arm's scoring (``assemble``)
and advantage on a fresh copy of the rollouts, then the trainer's own ``update`` on the whole
batch as one minibatch (π_old = π_θ), captured right before the optimizer step and aborted there
(weights, optimizer and component state stay at the checkpoint; clipping is disabled).

Statistics per arm, over the B per-batch gradients g_b (flattened over the trainable parameters):

    mean        ḡ = Σ_b g_b / B                          (the estimator's expected gradient, ±MC)
    trace_cov   Σ_b ‖g_b − ḡ‖² / (B − 1)                 (unbiased tr Cov of one batch's gradient)
    rel_var     trace_cov / ‖ḡ‖²                         (scale-free: estimators differ in scale)
    bias_sq     ‖D̄‖² − tr Cov(D)/B,  D_b = g_b − g_ref,b (unbiased ‖E g − E g_ref‖², paired on batches)
    cosine      cos(ḡ, ḡ_ref)

The reference is one arm (``reference``, default the first): its mean over all B batches is the
many-sample gradient (B × batch rows samples). ``sq_dev`` holds each batch's ‖g_b − ḡ_{−b}‖²·(B−1)/B
(leave-one-out, mean = trace_cov) so a claim can compare two arms' variances batch by batch with
``ablate.stats`` (paired on batches). No interval or p-value is computed here.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

from ablate.errors import ConfigError

# what the arms must share: the data the estimators are compared on
SHARED_KEYS = ("seed", "model", "task", "rollout", "pipeline", "train.prompts_per_step",
               "train.group_size")
# the probe's own settings, after the user's: one minibatch, one epoch, no clipping, no tracker
FORCED = ("train.epochs=1", "train.minibatches=1", "train.max_grad_norm=1e30",
          "train.skip_grad_norm=null", "train.steps=1", "tracker=none")


@dataclass
class ArmStats:
    label: str
    overrides: list
    mean_norm: float
    trace_cov: float
    rel_var: float
    bias_sq: float
    cosine: float
    sq_dev: list = field(default_factory=list)


@dataclass
class ProbeResult:
    reference: str
    batches: int
    batch_rows: list
    params: int
    base: list
    arms: list  # [ArmStats]

    def arm(self, label: str) -> ArmStats:
        return next(a for a in self.arms if a.label == label)

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        head = (f"Estimator probe at a fixed policy: {self.batches} shared rollout batches "
                f"({', '.join(map(str, sorted(set(self.batch_rows))))} rows), {self.params} "
                f"parameters; reference = `{self.reference}` (its mean over all batches).\n\n"
                "| arm | ‖E g‖ | tr Cov (one batch) | tr Cov / ‖E g‖² | bias² vs ref | cos to ref |\n"
                "|---|---|---|---|---|---|")
        rows = [f"| `{a.label}` | {a.mean_norm:.4g} | {a.trace_cov:.4g} | {a.rel_var:.4g} | "
                f"{a.bias_sq:.3g} | {a.cosine:.3f} |" for a in self.arms]
        return "\n".join([head, *rows]) + "\n"


# ---------------------------------------------------------------------------------- statistics
def summarize(labels: Sequence[str], grads: torch.Tensor, reference: str,
              overrides: Optional[Sequence[Sequence[str]]] = None) -> list[ArmStats]:
    """Per-arm statistics from per-batch gradients ``grads`` [arms, B, P] (see the module doc)."""
    G = grads.detach().to(torch.float64)
    A, B, _ = G.shape
    if B < 2:
        raise ValueError("probe: need at least 2 batches for a variance")
    r = list(labels).index(reference)
    ref_mean = G[r].mean(0)
    out = []
    for a in range(A):
        g = G[a]
        mean = g.mean(0)
        tr = float(((g - mean) ** 2).sum() / (B - 1))
        loo = (g.sum(0, keepdim=True) - g) / (B - 1)  # ḡ_{−b}
        sq_dev = (((g - loo) ** 2).sum(1) * (B - 1) / B).tolist()
        D = g - G[r]
        dm = D.mean(0)
        bias_sq = float((dm ** 2).sum() - ((D - dm) ** 2).sum() / (B - 1) / B)
        m2 = float((mean ** 2).sum())
        cos = float(torch.nn.functional.cosine_similarity(mean, ref_mean, dim=0))
        out.append(ArmStats(label=labels[a], overrides=list(overrides[a]) if overrides else [],
                            mean_norm=math.sqrt(m2), trace_cov=tr,
                            rel_var=tr / m2 if m2 > 0 else math.inf, bias_sq=bias_sq, cosine=cos,
                            sq_dev=sq_dev))
    return out


# ---------------------------------------------------------------------------------- configs
def compose_arms(base: Sequence[str], arms: Mapping[str, Sequence[str]]) -> dict:
    """Each arm's validated config (ConfigError on bad input, before anything is built)."""
    from omegaconf import OmegaConf

    from ablate.config import compose_config

    if len(arms) < 1:
        raise ConfigError("probe --arms: give at least one arm, e.g. --arms advantage=group_zscore,advantage=opo")
    cfgs = {label: compose_config([*base, *ov, *FORCED]) for label, ov in arms.items()}
    first_label, first = next(iter(cfgs.items()))
    for label, cfg in cfgs.items():
        for key in SHARED_KEYS:
            a, b = OmegaConf.select(first, key), OmegaConf.select(cfg, key)
            a = OmegaConf.to_container(a, resolve=True) if OmegaConf.is_config(a) else a
            b = OmegaConf.to_container(b, resolve=True) if OmegaConf.is_config(b) else b
            if a != b:
                raise ConfigError(f"probe arm {label!r}: changes {key} (arms must share the data; "
                                  f"allowed to differ: the objective's slots and terms)")
    return cfgs


# ---------------------------------------------------------------------------------- gradients
class _Captured(Exception):
    def __init__(self, grad: torch.Tensor):
        super().__init__("captured")
        self.grad = grad


def _capture_hook(params: list[torch.nn.Parameter]) -> Callable:
    def hook(opt, args, kwargs):  # before the optimizer step: record the gradient and abort it
        raise _Captured(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p))
                                   .detach().reshape(-1).to(torch.float64).cpu() for p in params]))
    return hook


def _arm_gradient(tr, rollouts, step: int, state) -> torch.Tensor:
    from ablate.component import load_tree_state

    load_tree_state(tr.algo, copy.deepcopy(state))  # every batch starts from the checkpoint's state
    batch = tr.assemble(copy.deepcopy(rollouts))
    tr.objective.compute_advantages(batch)
    try:
        tr.update(batch, step)
    except _Captured as c:
        return c.grad
    raise RuntimeError(f"probe: no optimizer step at batch {step} (a non-finite gradient?)")


def probe_gradients(cfgs: Mapping[str, object], batches: int,
                    log: Optional[Callable[[str], None]] = None) -> tuple[torch.Tensor, list, list]:
    """Per-batch gradients [arms, B, P] of each arm on shared batches, the batches' row counts,
    and the batches themselves (the rollouts: for tests and direct recomputation)."""
    from ablate.component import tree_state
    from ablate.train.trainer import Trainer

    trainers = {label: Trainer(cfg) for label, cfg in cfgs.items()}
    ref_params = None
    states = {}
    for label, tr in trainers.items():
        params = [p for p in tr.model.parameters() if p.requires_grad]
        flat = torch.cat([p.detach().reshape(-1).cpu() for p in params])
        if ref_params is not None and not torch.equal(flat, ref_params):
            raise RuntimeError(f"probe: arm {label!r} starts from different weights than the first arm")
        ref_params = flat
        tr.opt.register_step_pre_hook(_capture_hook(params))
        states[label] = tree_state(tr.algo)
    sampler = next(iter(trainers.values()))
    grads = torch.zeros(len(trainers), batches, ref_params.numel(), dtype=torch.float64)
    rows, kept = [], []
    for b in range(batches):
        rollouts, _ = sampler.collect(b + 1)
        rows.append(len(rollouts))
        kept.append(rollouts)
        for a, (label, tr) in enumerate(trainers.items()):
            grads[a, b] = _arm_gradient(tr, rollouts, b + 1, states[label])
        if log is not None:
            log(f"batch {b + 1}/{batches}: {len(rollouts)} rows")
    return grads, rows, kept


def probe_estimators(base: Sequence[str], arms: Mapping[str, Sequence[str]], *, batches: int = 16,
                     reference: Optional[str] = None,
                     log: Optional[Callable[[str], None]] = None) -> ProbeResult:
    """The probe (module doc). ``base``: overrides shared by every arm (``ablate train`` syntax,
    e.g. ``["method=grpo", "model.path=runs/x/model"]``); ``arms``: label → the arm's extra
    overrides (e.g. ``{"grpo": [], "opo": ["advantage=opo"]}``); ``reference``: the label whose
    mean gradient is the reference (default: the first arm). Bad input: ``ConfigError``."""
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 2:
        raise ConfigError(f"probe --batches: {batches!r}; allowed: an integer >= 2")
    labels = list(arms)
    ref = labels[0] if reference is None else reference
    if ref not in labels:
        raise ConfigError(f"probe --reference: unknown arm {ref!r}; allowed: {', '.join(labels)}")
    cfgs = compose_arms(base, arms)
    grads, rows, _ = probe_gradients(cfgs, batches, log=log)
    stats = summarize(labels, grads, ref, [list(arms[k]) for k in labels])
    return ProbeResult(reference=ref, batches=batches, batch_rows=rows, params=int(grads.shape[2]),
                       base=list(base), arms=stats)


# ---------------------------------------------------------------------------------- CLI
def split_arms(text: str) -> dict[str, list[str]]:
    """``--arms a=1,b=2 c=3`` → arms separated by commas outside brackets; an arm may hold several
    space-separated overrides (quote it); its label is its text."""
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += ch in "[{(" and 1 or 0
        depth -= ch in "]})" and 1 or 0
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    arms: dict[str, list[str]] = {}
    for p in parts:
        label = " ".join(p.split())
        if not label:
            raise ConfigError(f"probe --arms: empty arm in {text!r}; allowed: comma-separated overrides, "
                              "e.g. advantage=group_zscore,advantage=opo")
        if label in arms:
            raise ConfigError(f"probe --arms: arm {label!r} given twice")
        bad = [o for o in label.split() if "=" not in o]
        if bad:
            raise ConfigError(f"probe --arms: {bad[0]!r} is not an override key=value")
        arms[label] = label.split()
    return arms


def write_result(res: ProbeResult, out: Path) -> tuple[Path, Path]:
    """``<out>.json`` (everything, per-batch values included) and ``<out>.md`` (the table)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    js, md = out.with_suffix(".json"), out.with_suffix(".md")
    from ablate.tracking.run_store import to_jsonable  # NaN/inf -> null (strict JSON)

    js.write_text(json.dumps(to_jsonable(res.to_dict()), indent=2, allow_nan=False) + "\n",
                  encoding="utf-8")
    md.write_text(res.markdown(), encoding="utf-8")
    return js, md

