"""Pairwise preference terms (DPO / IPO) over verifier-ranked online pairs, with the reference model.

Within each prompt group of rollouts, a pair (chosen c, rejected r) is two rows with r_c > r_r by
the verifier. With h = (log π_θ(y_c) − log π_ref(y_c)) − (log π_θ(y_r) − log π_ref(y_r)) (sequence
log-probs, π_ref the frozen initial policy):

    dpo:  −log σ(β·h)                      (Rafailov et al. 2023, arXiv 2305.18290)
    ipo:  (h − 1/(2β))²                    (Azar et al. 2023, arXiv 2310.12036)

``pairs``: ``best_worst`` (one pair per group: first highest- vs first lowest-reward row, as online
iterative DPO picks best-of-n vs worst-of-n) or ``all`` (every ordered pair with r_i > r_j, the
group's pairs averaged). ``sft_coef`` adds λ·(−log π_θ(y_c)/|y_c|) on the chosen row of every pair
(RPO's SFT regulariser). Groups without a reward difference give no pair. The term is a mean over
the minibatch's prompt groups (``norm.num_groups``), so gradient accumulation over whole groups is
exact. Declares whole groups and the reference model.
"""

from __future__ import annotations

from typing import Literal
import torch
import torch.nn.functional as F

from ablate.component import Needs
from ablate.objectives.base import ROW_KINDS, Term, TermOutput
from ablate.objectives.grouped import dense_groups, group_sums, participants, sequence_log_ratio
from ablate.spec.params import NonNeg, Num, Positive
from ablate.upge.aggregation import Normalizer
from ablate.upge.diagnostics import mean, partial
from ablate.upge.slots.base import TokenContext

LOSSES = ("dpo", "ipo")
PAIRS = ("best_worst", "all")


class PairwisePreference(Term):
    """DPO / IPO on verifier-ranked pairs of one prompt's rollouts (module doc)."""

    def __init__(self, weight: Num = 1.0, rows: Literal[ROW_KINDS] = "policy", loss: Literal[LOSSES] = "dpo",
                 beta: Positive = 0.1, pairs: Literal[PAIRS] = "best_worst", sft_coef: NonNeg = 0.0):
        super().__init__(weight=weight, rows=rows)
        self.beta, self.sft_coef, self.loss_kind, self.pairs = beta, sft_coef, loss, pairs

    def needs(self) -> Needs:
        return Needs(whole_groups=True, ref_model=True)

    def _pairs(self, r: torch.Tensor, inv: torch.Tensor, G: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) row indices into the participating rows."""
        if self.pairs == "all":
            same = inv[:, None] == inv[None, :]
            c, j = torch.nonzero(same & (r[:, None] > r[None, :]), as_tuple=True)
            return c, j
        ch, rj = [], []
        for g in range(G):
            idx = torch.nonzero(inv == g).reshape(-1)
            rg = r[idx]
            if idx.numel() > 1 and bool(rg.max() > rg.min()):
                ch.append(idx[int(torch.argmax(rg))])
                rj.append(idx[int(torch.argmin(rg))])
        empty = torch.zeros(0, dtype=torch.long, device=r.device)
        return (torch.stack(ch), torch.stack(rj)) if ch else (empty, empty)

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        if ctx.group_ids is None or ctx.rewards is None:
            raise ValueError("PairwisePreference needs ctx.group_ids and ctx.rewards")
        if ctx.ref_logp is None:
            raise ValueError("PairwisePreference needs reference log-probs (Needs(ref_model=True))")
        idx = torch.nonzero(participants(ctx.response_mask)).reshape(-1)
        zero = (ctx.logp * 0).sum()
        if idx.numel() == 0:
            return TermOutput(loss=zero, diags={"pg_loss": partial(zero)})
        s = sequence_log_ratio(ctx.logp, ctx.ref_logp, ctx.response_mask)[idx]
        r = ctx.rewards.to(ctx.logp.dtype)[idx].detach()
        inv, G = dense_groups(ctx.group_ids[idx])
        c, j = self._pairs(r, inv, G)
        if c.numel() == 0:
            return TermOutput(loss=zero, diags={"pg_loss": partial(zero)})
        h = s[c] - s[j]
        per_pair = -F.logsigmoid(self.beta * h) if self.loss_kind == "dpo" else (h - 1.0 / (2 * self.beta)) ** 2
        if self.sft_coef > 0:
            m = ctx.response_mask.to(ctx.logp.dtype)[idx]
            nll = -(torch.where(m > 0, ctx.logp[idx], torch.zeros_like(m)) * m).sum(-1) / m.sum(-1).clamp_min(1.0)
            per_pair = per_pair + self.sft_coef * nll[c]
        n_pairs = group_sums(torch.ones_like(h), inv[c], G)
        per_group = group_sums(per_pair, inv[c], G) / n_pairs.clamp_min(1.0)
        value = per_group.sum() / max(float(norm.num_groups), 1.0)
        with torch.no_grad():
            acc = (h > 0).to(h.dtype).mean()
            diags = {"pg_loss": partial(value), "pairwise/margin_mean": mean(h.mean()),
                     "pairwise/accuracy": mean(acc)}
        return TermOutput(loss=value, diags=diags)
