"""COPO's two advantages (arXiv 2508.04138; hijih/copo-code@f66883fb89271d4664bfdd9ca98acf6d28d3887b
``verl/trainer/ppo/core_algos.py``: ``compute_grpo_outcome_advantage_with_global``,
``compute_policy_loss_with_global``).

Per prompt q with G responses: Â_local = GRPO z-score (verl: Bessel std, ε 1e-6, singleton mean 0 /
std 1); g_q = mean_i r_i (× (1 − λ·H_q), λ = (1 − 1/G)/log₂G, when ``reward_coef``; off in the
scripts); Â_global = (g_q − mean_q g)/(std_q g + ε) over the batch's prompts (shared by all of q's
responses); H_q = log₂-entropy of the distribution of extracted answers in the group.

The loss blend is (1 − w)·PPO(Â_global) + w·PPO(Â_local) per token with w = sigmoid(k·(H_q − b))·gate:
``blend: soft-with-zero`` (the README's "our COPO method", run_copo.sh: k 5, b 1) gates on the raw reward,
1[r_i ≠ 0]; ``soft-with-forced`` on the local advantage, 1[Â_local ≠ 0]. PPO's clip / dual clip depends on Â only through its
sign, and w, 1 − w ≥ 0, so the blend is exactly the sum of two UPGE terms with advantages w·Â_local
(``part: local``) and (1 − w)·Â_global (``part: global``).

Answers: ``batch.rows["meta"][i][answer_key]`` where the verifier extracted one, else the response's
token ids (tasks whose completion is the answer, e.g. arithmetic).
"""

from __future__ import annotations

from typing import Literal
import math
from collections import Counter

import torch

from ablate.spec.params import NonNeg, Num
from ablate.upge.batch import RolloutBatch
from ablate.upge.slots.advantage import GroupZScore
from ablate.upge.slots.base import Advantage

PARTS = ("local", "global")
BLENDS = ("soft-with-zero", "soft-with-forced")  # copo-code global_flg values


def answer_entropy_bits(answers: list) -> float:
    """log₂ entropy of the empirical distribution of ``answers`` (copo-code ``entropy_from_list``)."""
    counts = Counter(answers)
    n = sum(counts.values())
    return -sum((c / n) * math.log2(c / n) for c in counts.values())


class COPOAdvantage(Advantage):
    """One half of COPO's blend: w·Â_local (``part: local``) or (1 − w)·Â_global (``part: global``)."""

    def __init__(self, part: Literal[PARTS] = "local", k: Num = 20.0, b: Num = 0.5, eps: NonNeg = 1e-6,
                 reward_coef: bool = False, answer_key: str = "answer",
                 blend: Literal[BLENDS] = "soft-with-forced"):
        self.k, self.b, self.eps, self.part, self.blend = k, b, eps, part, blend
        self.reward_coef, self.answer_key = reward_coef, answer_key
        self._local = GroupZScore(eps=eps, unbiased=True, eps_placement="std", singleton="raw")

    def _answers(self, batch: RolloutBatch) -> list:
        meta = batch.rows.get("meta")
        out = []
        resp = batch.input_ids[:, batch.prompt_len:]
        lens = batch.lengths.tolist()
        for i in range(batch.batch_size):
            m = meta[i] if meta is not None and i < len(meta) else None
            if isinstance(m, dict) and m.get(self.answer_key) is not None:
                out.append(str(m[self.answer_key]))
            else:
                out.append(tuple(resp[i, : lens[i]].tolist()))
        return out

    def parts(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Â_local [B], Â_global [B], w [B]) as float64."""
        local = self._local.per_response(batch)
        r = torch.nan_to_num(batch.rewards.reshape(-1).to(torch.float64), nan=0.0)
        gids = batch.group_ids.reshape(-1).tolist()
        answers = self._answers(batch)
        rows: dict[int, list[int]] = {}
        for i, g in enumerate(gids):
            rows.setdefault(g, []).append(i)
        score, ent = {}, {}
        for g, idx in rows.items():
            H = answer_entropy_bits([answers[i] for i in idx])
            G = len(idx)
            coef = 1.0
            if self.reward_coef and G > 1:
                coef = 1.0 - (1.0 - 1.0 / G) / math.log2(G) * H
            score[g] = float(r[idx].mean()) * coef
            ent[g] = H
        vals = torch.tensor(list(score.values()), dtype=torch.float64)
        mu = vals.mean()
        sd = vals.std() if vals.numel() > 1 else torch.tensor(float("nan"), dtype=torch.float64)
        glob = torch.tensor([(score[g] - mu) / (sd + self.eps) for g in gids], dtype=torch.float64)
        glob = torch.nan_to_num(glob, nan=0.0)  # one prompt: torch.std is undefined (verl would give NaN)
        H = torch.tensor([ent[g] for g in gids], dtype=torch.float64)
        gate = (r != 0) if self.blend == "soft-with-zero" else (local != 0)
        w = torch.sigmoid(self.k * (H - self.b)) * gate.to(torch.float64)
        return local, glob, w

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        local, glob, w = self.parts(batch)
        a = w * local if self.part == "local" else (1.0 - w) * glob
        dt = batch.response_mask.dtype if batch.response_mask.is_floating_point() else torch.float32
        return a.to(dt)[:, None] * batch.response_mask.to(dt)
