"""G²RPO's Gaussianised advantage (OpenVLThinkerV2, arXiv 2604.08539): each group's advantages are
mapped onto N(0, 1) by rank, Â_i = Φ⁻¹(F̂(r_i)), instead of GRPO's linear z-score."""

from __future__ import annotations

import torch

from ablate.upge import functional as F
from ablate.upge.slots.advantage import _Outcome


class GaussianRank(_Outcome):
    """Â_i = Φ⁻¹((rank_i − ½)/n) within the group (mid-rank empirical CDF; ties share their average rank).

    The abstract only says the advantage distribution is forced to N(0, 1) by a non-linear
    distributional matching; the rank → normal-quantile map is the catalog's reading. Ties (binary
    rewards) take the mid-rank F̂ = (#below + ½·#equal)/n, so an all-equal group and a singleton get
    Φ⁻¹(½) = 0. NaN rewards are left out of the ranks and get Â = 0.
    """

    def _compute(self, r, valid, stats, batch):
        gid = batch.group_ids
        # #below and #equal per row among its group's rows in the statistics: O(B·G) pairwise
        # comparison inside groups, vectorised (B is a few hundred)
        same = (gid[:, None] == gid[None, :]) & stats[None, :]
        below = (same & (r[None, :] < r[:, None])).sum(-1).to(torch.float64)
        equal = (same & (r[None, :] == r[:, None])).sum(-1).to(torch.float64)
        n = F.group_count(gid, stats)
        u = (below + 0.5 * equal) / n.clamp_min(1.0)
        return torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12))
