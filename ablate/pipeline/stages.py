"""Stages outside the four slots: group filters, reward shaping, demonstration mixing, HPT's gate."""

from __future__ import annotations

from typing import ClassVar, Optional

from ablate.component import Needs
from ablate.errors import choice_error
from ablate.spec.params import NonNegInt, Num, PosFrac, PosInt, require
from ablate.pipeline.base import Rollouts, Stage, StageEnv, encode_demo


def _group_rewards(r: Rollouts, on_policy_only: bool = True) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {g: [] for g in range(len(r.problems))}
    for i, g in enumerate(r.group):
        if not (on_policy_only and r.is_demo[i]):
            out[g].append(r.rewards[i])
    return out


def _add_demo_group(out: Rollouts, r: Rollouts, g: int, env: StageEnv, loss_weight: float = 1.0) -> None:
    """Append problem ``g`` of ``r`` to ``out`` as a new group holding one demonstration row."""
    p = r.problems[g]
    ids = encode_demo(p, env)
    if ids is None:
        return
    k = len(out.problems)
    out.problems.append(p)
    out.prompt_ids.append(r.prompt_ids[g])
    out.add_row(k, ids, p.demo or "", 1.0, {}, is_demo=True, loss_weight=loss_weight)


class DynamicSampling(Stage):
    """DAPO dynamic sampling (arXiv 2503.14476): drop groups whose rewards are all equal; the trainer
    generates more prompts (up to ``max_gen_batches`` generation rounds) to refill the batch."""

    def __init__(self, max_gen_batches: PosInt = 3):
        self.max_gen_batches = max_gen_batches

    def needs(self) -> Needs:
        return Needs(refill_rounds=self.max_gen_batches)

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        gr = _group_rewards(r)
        keep_groups = {g for g, rs in gr.items() if len(rs) > 1 and max(rs) > min(rs)}
        env.stats["train/filtered_groups"] = env.stats.get("train/filtered_groups", 0.0) + \
            float(len(gr) - len(keep_groups))
        return r.keep_rows([i for i, g in enumerate(r.group) if g in keep_groups])


class RejectUniformGroups(DynamicSampling):
    """Reinforce-Rej (arXiv 2504.11343): discard all-correct and all-wrong prompts, no refill."""

    def __init__(self) -> None:
        super().__init__(max_gen_batches=1)


class OverlongShaping(Stage):
    """DAPO soft overlong punishment: 0 up to L_max − L_cache, linear down to −penalty at L_max.

    ``max_len`` None = the run's generation budget. The window L_cache is ``cache_len`` tokens, or
    with ``cache_frac`` that fraction of L_max (DAPO: 4096 of 20480 = 0.2), rounded, at least 1.
    Truncated responses get the full penalty.
    """

    def __init__(self, cache_len: Optional[NonNegInt] = 2, penalty: Num = 1.0, max_len: Optional[PosInt] = None,
                 cache_frac: Optional[PosFrac] = None):
        require((cache_len is None) != (cache_frac is None), self, "cache_frac", cache_frac,
                f"null when cache_len is set (got {cache_len!r}); set exactly one of cache_len (tokens) "
                "and cache_frac (fraction of the budget)")
        self.cache_len, self.penalty, self.max_len, self.cache_frac = cache_len, penalty, max_len, cache_frac

    def window(self, lmax: int) -> int:
        if self.cache_frac is not None:
            return max(1, round(self.cache_frac * lmax))
        return int(self.cache_len)

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        lmax = self.max_len or env.max_new_tokens
        cache = self.window(lmax)
        start = lmax - cache
        for i, ids in enumerate(r.response_ids):
            if r.is_demo[i]:
                continue
            n = len(ids)
            if n > start:
                r.rewards[i] += -self.penalty * min(1.0, (n - start) / max(cache, 1))
        return r


class MaskTruncated(Stage):
    """TRL ``mask_truncated_completions`` (GRPOTrainer, TRL 1.16): a completion cut at the length budget
    (no EOS) keeps its row, its reward and its place in the group statistics, but none of its tokens
    enter the loss or its token counts. The row's tokens are dropped here, so it reaches the loss as an
    empty row: aggregations with ``count_empty_rows`` (TRL's grpo/dr_grpo normalisers, conf/aggregation
    grpo_trl, drgrpo ``count_empty_rows``) still count it, token normalisers do not. Demonstrations are
    never truncated rollouts and are left alone."""

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        n = 0
        for i, cut in enumerate(r.truncated):
            if cut and not r.is_demo[i]:
                r.response_ids[i] = []
                if r.engine_logp and i < len(r.engine_logp):
                    r.engine_logp[i] = []
                n += 1
        env.stats["train/masked_truncated"] = env.stats.get("train/masked_truncated", 0.0) + float(n)
        return r


class DemosOnly(Stage):
    """SFT: replace each prompt's rollouts by its demonstration (one row per prompt)."""

    NEEDS: ClassVar[Needs] = Needs(rollouts=False)

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        out = Rollouts(problems=[])
        for g in range(len(r.problems)):
            _add_demo_group(out, r, g, env)
        if not out.problems:
            raise ValueError("pipeline DemosOnly: the task has no demonstrations (Problem.demo is None)")
        return out


class MixDemos(Stage):
    """LUFFY / SRFT: add ``num_demos`` demonstration rows to each group (off-policy traces).

    The demo is verified like a rollout so its reward enters the group statistics (Â over on∪off).
    ``replace`` = True swaps out the last on-policy rollouts to keep G fixed (LUFFY: 7 + 1).
    """

    def __init__(self, num_demos: NonNegInt = 1, replace: bool = True):
        self.num_demos, self.replace = num_demos, replace

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        drop: set[int] = set()
        add: list[tuple[int, list[int], str, float, dict]] = []
        for g, p in enumerate(r.problems):
            ids = encode_demo(p, env)
            if ids is None:
                continue
            rew = env.task.verify(p, p.demo)
            rows = r.rows_of(g)
            if self.replace:
                drop.update(rows[len(rows) - self.num_demos:])
            add.extend((g, ids, p.demo, rew.total, rew.components) for _ in range(self.num_demos))
        r = r.keep_rows([i for i in range(len(r)) if i not in drop]) if drop else r
        for g, ids, text, rew, comp in add:
            r.add_row(g, ids, text, rew, comp, is_demo=True)
        order = sorted(range(len(r)), key=lambda i: (r.group[i], r.is_demo[i]))
        return r.keep_rows(order)


class HPTGate(Stage):
    """HPT (arXiv 2509.04419) switch gate: per prompt, if #correct among on-policy rollouts ≤ ``gate``
    the rollouts are replaced by one SFT row on the demonstration (weight ``sft_coef``), else RL.

    SFT rows are marked demo; pair with the `hpt` mask/denominator/advantage variants that treat demo
    rows as SFT (weight 1, Â ≡ 1) and on-policy rows as RL.
    """

    def __init__(self, gate: int = 0, sft_coef: float = 1.0, success_value: float = 1.0):
        self.gate, self.sft_coef, self.success_value = gate, sft_coef, success_value

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        keep: list[int] = []
        sft: list[int] = []
        for g in range(len(r.problems)):
            rows = r.rows_of(g)
            solved = sum(1 for i in rows if r.rewards[i] >= self.success_value)
            (sft if solved <= self.gate else keep).append(g)
        out = r.keep_rows([i for i, g in enumerate(r.group) if g in set(keep)]) if keep else Rollouts([])
        for g in sft:
            _add_demo_group(out, r, g, env, loss_weight=self.sft_coef)
        env.stats["train/sft_frac"] = len(sft) / max(1, len(r.problems))
        return out


STAGES = {c.__name__: c for c in (DynamicSampling, RejectUniformGroups, OverlongShaping, DemosOnly,
                                   MixDemos, HPTGate)}


def build_stages(stage_cfgs) -> list[Stage]:
    """Build the ``pipeline.stages`` list; each item is {_target_: ..., params}."""
    from ablate.registry import build, plain

    out: list[Stage] = []
    for k, sc in enumerate(plain(stage_cfgs) or []):
        field = f"pipeline.stages[{k}]"
        if not isinstance(sc, dict) or "_target_" not in sc:
            raise choice_error(field, sc, [f"{{_target_: ablate.pipeline.stages.{n}}}" for n in STAGES])
        out.append(build("stage", sc, field))
    return out
