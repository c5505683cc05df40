"""The value model: a separate critic (the policy's transformer body, copied, plus a scalar head)
with its own optimizer, clipped value loss, learning rate and warm-up, as verl's critic worker.

The trainer asks for it only when some component declares ``Needs(values=True)``: it ``attach``es
it to the policy once, calls ``score`` on each batch before the advantage (→ batch.rows["values"],
V(s_t) for the state *before* response token t, verl's alignment), and ``update`` after the policy
step on the value targets the advantage wrote (batch.rows["returns"]; Monte-Carlo returns when no
advantage wrote any). Its weights and optimizer are component state, so they travel in
``Trainer.state_dict()`` and the trial checkpoint.
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar, Literal, Mapping, Optional

import torch

from ablate.component import Component, Needs
from ablate.critic.functional import explained_variance, value_loss
from ablate.errors import ConfigError
from ablate.optim import adamw, lr_schedule
from ablate.spec.params import NonNeg, NonNegInt, PosInt, Positive
from ablate.policy.forward import position_ids_from_mask
from ablate.upge.partition import partition
from ablate.upge.batch import RolloutBatch

INITS = ("policy", "fresh")


class ValueModel(Component):
    """Critic V(s_t) with the clipped value loss ½·max((V−R)², (clip(V, V_old±c)−R)²), token-mean.

    ``init``: ``policy`` copies the (warm-started) policy's body, as verl initialises its critic from
    the actor; ``fresh`` re-initialises it. The head starts at zero (V ≡ 0 before the first update).
    ``cliprange_value`` None disables clipping (verl default 0.5). ``lr``/``weight_decay`` are verl's
    critic defaults (1e-5, 0.01); ``warmup_steps`` is a linear LR warm-up in optimizer steps.
    """

    family = "critic"
    NEEDS: ClassVar[Needs] = Needs(values=True)

    def __init__(self, lr: Positive = 1e-5, weight_decay: NonNeg = 0.01, betas: tuple = (0.9, 0.999),
                 warmup_steps: NonNegInt = 0, cliprange_value: Optional[Positive] = 0.5,
                 coef: Positive = 1.0, epochs: PosInt = 1, minibatches: PosInt = 1,
                 microbatches: PosInt = 1, max_grad_norm: Positive = 1.0,
                 init: Literal[INITS] = "policy"):
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(float(b) for b in betas)
        self.warmup_steps, self.cliprange_value, self.coef = warmup_steps, cliprange_value, coef
        self.epochs, self.minibatches, self.microbatches = epochs, minibatches, microbatches
        self.max_grad_norm, self.init = max_grad_norm, init
        self._body: Optional[torch.nn.Module] = None
        self._head: Optional[torch.nn.Linear] = None
        self._opt: Optional[torch.optim.Optimizer] = None
        self._sched = None
        self._updates = 0

    # ------------------------------------------------------------------ setup
    def attach(self, policy: torch.nn.Module) -> None:
        """Build the critic from the policy (a transformers causal LM): its body, copied, + a head."""
        body = getattr(policy, "base_model", None)
        if body is None or body is policy:
            raise ConfigError(f"critic: the policy {type(policy).__name__} has no separate transformer "
                              "body (base_model) to copy into a value model")
        self._body = copy.deepcopy(body).requires_grad_(True)
        if self.init == "fresh":
            self._body.apply(self._body._init_weights)
        hidden = int(policy.config.hidden_size)
        p0 = next(self._body.parameters())
        self._head = torch.nn.Linear(hidden, 1).to(device=p0.device, dtype=torch.float32)
        torch.nn.init.zeros_(self._head.weight)
        torch.nn.init.zeros_(self._head.bias)
        self._opt = adamw(self.parameters(), lr=self.lr, betas=self.betas,
                          weight_decay=self.weight_decay)
        self._sched = lr_schedule(self._opt, "constant", self.warmup_steps, 1)

    @property
    def attached(self) -> bool:
        return self._body is not None

    def parameters(self) -> list[torch.nn.Parameter]:
        self._require()
        return list(self._body.parameters()) + list(self._head.parameters())

    def _require(self) -> None:
        if self._body is None:
            raise RuntimeError("critic: attach(policy) must be called before it is used")

    # ------------------------------------------------------------------ forward
    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
        """V(s_t) [B, T] for the response tokens input_ids[:, prompt_len:] (float32, with grad)."""
        self._require()
        out = self._body(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        h = out.last_hidden_state[:, prompt_len - 1:-1, :].float()
        return self._head(h).squeeze(-1)

    @torch.no_grad()
    def score(self, batch: RolloutBatch) -> torch.Tensor:
        """Values of every row before the advantage (no grad), zero on padding."""
        self._require()
        self._body.eval()
        parts = []
        for idx in torch.arange(batch.batch_size).tensor_split(min(self.microbatches, batch.batch_size)):
            idx = idx.to(batch.input_ids.device)
            parts.append(self.values(batch.input_ids[idx], batch.attention_mask[idx], batch.prompt_len))
        return torch.cat(parts, 0) * batch.response_mask.to(torch.float32)

    # ------------------------------------------------------------------ training
    @staticmethod
    def targets(batch: RolloutBatch) -> torch.Tensor:
        """Value targets: batch.rows["returns"] (GAE's A + V), else the outcome reward at every
        valid token (Monte-Carlo return with γ = 1)."""
        rm = batch.response_mask.to(torch.float32)
        ret = batch.rows.get("returns")
        if ret is not None:
            return ret.to(torch.float32) * rm
        return torch.nan_to_num(batch.rewards.to(torch.float32))[:, None] * rm

    def update(self, batch: RolloutBatch, step: int) -> dict[str, float]:
        """Epochs × minibatches of the clipped value loss on this batch; metrics as train/value_*."""
        self._require()
        old = batch.rows.get("values")
        if old is None:
            raise RuntimeError("critic.update: batch.rows['values'] is missing (score() runs first)")
        returns = self.targets(batch)
        rm = batch.response_mask.to(torch.float32)
        metrics = {"train/value_explained_var": explained_variance(old, returns, rm),
                   "train/value_mean": float((old * rm).sum() / rm.sum().clamp_min(1.0)),
                   "train/return_mean": float((returns * rm).sum() / rm.sum().clamp_min(1.0))}
        gen = torch.Generator().manual_seed(1_000_003 * step + 29)
        self._body.train()
        losses, clipped, tokens, norms = [], 0.0, 0.0, []
        for _ in range(self.epochs):
            for mb in partition(batch.batch_size, self.minibatches, gen):
                mb_dev = mb.to(batch.input_ids.device)
                n_tok = float(rm[mb_dev].sum())
                self._opt.zero_grad(set_to_none=True)
                mb_loss = 0.0
                for mc in partition(mb.numel(), self.microbatches, None):
                    rows = mb_dev[mc.to(mb_dev.device)]
                    vpred = self.values(batch.input_ids[rows], batch.attention_mask[rows], batch.prompt_len)
                    loss, nclip = value_loss(vpred, old[rows], returns[rows], rm[rows],
                                             self.cliprange_value, n_tok)
                    (self.coef * loss).backward()
                    mb_loss += float(loss.detach())
                    clipped += float(nclip)
                gnorm = float(torch.nn.utils.clip_grad_norm_(self.parameters(), self.max_grad_norm))
                if math.isfinite(gnorm):
                    self._opt.step()
                    self._sched.step()
                    self._updates += 1
                self._opt.zero_grad(set_to_none=True)
                losses.append(mb_loss)
                norms.append(gnorm)
                tokens += n_tok
        metrics["train/value_loss"] = float(sum(losses) / max(1, len(losses)))
        metrics["train/value_clip_frac"] = clipped / max(tokens, 1.0)
        metrics["train/value_grad_norm"] = float(sum(norms) / max(1, len(norms)))
        metrics["train/value_lr"] = float(self._sched.get_last_lr()[0])
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        if self._body is None:
            return {}
        return {"body": self._body.state_dict(), "head": self._head.state_dict(),
                "optimizer": self._opt.state_dict(), "scheduler": self._sched.state_dict(),
                "updates": self._updates}

    def load_state_dict(self, state: Mapping) -> None:
        if not state:
            return
        self._require()
        self._body.load_state_dict(state["body"])
        self._head.load_state_dict(state["head"])
        self._opt.load_state_dict(state["optimizer"])
        self._sched.load_state_dict(state["scheduler"])
        self._updates = int(state["updates"])

    def extra_repr(self) -> str:
        keys = ("lr", "weight_decay", "warmup_steps", "cliprange_value", "coef", "epochs",
                "minibatches", "microbatches", "max_grad_norm", "init")
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in keys)
