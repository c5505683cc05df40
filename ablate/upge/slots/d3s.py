"""D³S, dynamic dual-level down-sampling (arXiv 2509.22115): the token level (keep the top-K% tokens
by |Â|·H) and the advantage the sample-level stage (ablate.pipeline.d3s) computed before selecting.

Both levels follow a linear schedule over training, read from the step context (``ctx.info``)."""

from __future__ import annotations

from typing import ClassVar

import torch

from ablate.spec.params import PosFrac
from ablate.component import Needs, StepInfo
from ablate.upge.batch import RolloutBatch
from ablate.upge.slots.advantage import _broadcast
from ablate.upge.slots.base import Advantage, Mask, MaskResult, TokenContext
from ablate.upge.slots.mask import TopEntropy, _result, valid_tokens


def linear_schedule(start: float, end: float, info: StepInfo | None, owner: str) -> float:
    """start + (end − start)·progress, progress = fraction of training done before this step."""
    if info is None:
        raise ValueError(f"{owner} needs the step context (ctx.info / batch.info); the trainer fills "
                         "it when a component declares Needs(step_info=True)")
    return start + (end - start) * info.progress


class TopScoreTokens(Mask):
    """Keep the top-K fraction of valid tokens by |Â_{i,t}|·H_{i,t} (D³S token level); K goes linearly
    from ``keep_init`` to ``keep_final`` over training. keep ⇔ score ≥ quantile(score, 1 − K)
    (linear interpolation, over the microbatch's valid tokens, ties kept). H is the current policy's
    entropy (``ctx.entropy``). Event ``d3s_token``.
    """

    NEEDS: ClassVar[Needs] = Needs(entropy=True, step_info=True)

    def __init__(self, keep_init: PosFrac = 0.2, keep_final: PosFrac = 1.0):
        self.keep_init = keep_init
        self.keep_final = keep_final

    def keep_fraction(self, info: StepInfo | None) -> float:
        return linear_schedule(self.keep_init, self.keep_final, info, "TopScoreTokens")

    def __call__(self, ctx: TokenContext) -> MaskResult:
        if ctx.entropy is None:
            raise ValueError("TopScoreTokens needs ctx.entropy (declared Needs(entropy=True))")
        k = self.keep_fraction(ctx.info)
        valid = valid_tokens(ctx)
        score = ctx.advantages.abs() * ctx.entropy.detach().to(ctx.advantages.dtype)
        if not bool(valid.any()) or k >= 1.0:
            return _result({"d3s_token": torch.zeros_like(valid)}, ctx.response_mask)
        thr = TopEntropy._threshold(score[valid], 1.0 - k)
        return _result({"d3s_token": valid & ~(score >= thr)}, ctx.response_mask)


class StageAdvantage(Advantage):
    """Â per row as a pipeline stage recorded it in the row's metadata (``rows["meta"][i][key]``),
    broadcast over its tokens. D³S computes the group advantage *before* it drops rollouts, so the
    kept rows keep that value (a z-score recomputed on the kept subset would differ)."""

    def __init__(self, key: str = "d3s_advantage"):
        self.key = str(key)

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        meta = batch.rows.get("meta")
        if meta is None or len(meta) != batch.batch_size or any(self.key not in m for m in meta):
            raise ValueError(f"advantage StageAdvantage: every row needs rows['meta'][i][{self.key!r}] "
                             "(set by a pipeline stage such as ablate.pipeline.d3s.MaxVarianceSubset)")
        a = torch.tensor([float(m[self.key]) for m in meta], dtype=torch.float64,
                         device=batch.response_mask.device)
        return _broadcast(a, batch)
