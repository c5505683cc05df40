"""The trainer loop: rollout → rewards → pipeline → advantage → epochs × minibatches × microbatches
of the UPGE loss → optimizer step → metrics → tracker; Pass@k on the held-out split every N steps.

It knows no algorithm: everything method-specific is in the objective (terms with their slots,
regularizers) and the stages that `build_algorithm` returns. The step is planned from the union of
what those components declare they need (``Algorithm.needs()``): a reference model, entropy, a
scoring pass before the advantage, whole groups per microbatch, the step context.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from ablate.component import load_tree_state, observe_tree, schedule_of, tree_state
from ablate.config import check_run
from ablate.metrics.entropy import token_entropy_sum_count
from ablate.metrics.gradvar import GradVarianceMeter
from ablate.metrics.passk import pass_at_k_metrics
from ablate.optim import adamw, lr_schedule
from ablate.pipeline.base import Generated, Rollouts, StageEnv
from ablate.policy import build_policy, logprobs_of_logits, pack, response_outputs, token_logprobs
from ablate.policy.lora import FrozenBase, is_lora, load_policy_state, policy_state
from ablate.rollout import build_engine, pin_budget
from ablate.rollout.base import is_weights
from ablate.schema import RunConfig
from ablate.tasks import build_task
from ablate.train.components import Algorithm, build_algorithm
from ablate.train.distributed import Dist
from ablate.train.eval_cache import EvalCache, digest, tokenizer_identity, weights_digest
from ablate.train.state import TrainingState, load_rng_state, rng_state
from ablate.train.validate import Validated
from ablate.upge.batch import RolloutBatch
from ablate.upge.diagnostics import DiagAccumulator
from ablate.upge.functional import group_reward_stats, zero_advantage_group_fraction
from ablate.upge.partition import group_units, partition

Reporter = Callable[[dict], None]


@dataclass
class Timers:
    """Wall-clock seconds per phase of one step (CPU ops are synchronous, so no device syncs)."""

    acc: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.acc[name] = self.acc.get(name, 0.0) + time.perf_counter() - t0

    def pop(self) -> dict[str, float]:
        out, self.acc = self.acc, {}
        return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def policy_seed(spec: RunConfig) -> int:
    """Seed of the initial weights and warm start: ``model.seed``, else the run's seed."""
    return spec.seed if spec.model.seed is None else spec.model.seed


def _disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off (as TRL's disable_dropout): train-mode and eval-mode log-probs must agree, or
    ρ ≠ 1 on-policy and the behaviour log-probs would depend on which pass scored them."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    config = vars(model).get("config")
    if config is not None and "attention_dropout" in vars(config):
        config.attention_dropout = 0.0


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _chunks(n: int, k: int) -> list[torch.Tensor]:
    return [c for c in torch.arange(n).tensor_split(max(1, min(k, n))) if c.numel() > 0]


def _temp_key(t: float) -> str:
    return f"old_logp@{t:g}"


class Trainer:
    """One training run. ``run()`` returns the summary dict the run store also writes."""

    def __init__(self, cfg: DictConfig, tracker=None, reporter: Optional[Reporter] = None,
                 on_step_end: Optional[Callable[["Trainer", int], None]] = None,
                 dist: Optional[Dist] = None, spec: Optional[RunConfig] = None,
                 built: Optional[Validated] = None, eval_cache: Optional[EvalCache] = None):
        self.cfg = cfg  # the raw groups the component builders read
        self.eval_cache = eval_cache  # evals shared by the runs of a sweep (ablate/train/eval_cache.py)
        if built is not None:  # run_config's validation: its spec, components and task are reused
            spec = built.run
        self.spec = spec if spec is not None else check_run(cfg)  # typed, checked once (run_config)
        self.dist = dist or Dist()  # one worker of a multi-worker trial (ablate/train/distributed.py)
        self.on_step_end = on_step_end  # e.g. a checkpoint hook: called after each logged step
        self.tracker = tracker
        self.reporter = reporter
        self.seed = self.spec.seed
        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)
        _seed_everything(self.seed)
        self.device = resolve_device(self.spec.device)
        prebuilt = built is not None and built.algorithm is not None and built.task is not None
        if prebuilt:  # validation built the task, pinned the budget, then built the components
            self.task, self.budget = built.task, built.budget
        else:
            self.task = build_task(cfg.task)
            # the effective budget, before any component reads a length constant (L_max)
            self.budget = pin_budget(cfg, self.task)
        self.algo: Algorithm = built.algorithm if prebuilt else build_algorithm(cfg)
        self.plan = self.algo.needs()
        # what the schedule lets act (from the components' Acts declarations; api announces it)
        self.schedule = schedule_of(self.algo, self.spec.train.epochs, self.spec.train.minibatches)
        self.objective = self.algo.objective
        self.policy = build_policy(cfg.model, self.task, policy_seed(self.spec), self.device)
        self.model, self.tok = self.policy.model, self.policy.tokenizer
        self.task = self.policy.task  # prompts in the tokenizer's format (task.prompt_format)
        _seed_everything(self.seed)  # the warm start (or its cache hit) must not shift the RL seed
        _disable_dropout(self.model)
        self.ref_model = None
        if self.plan.ref_model:  # under LoRA the frozen base is the reference: no second copy
            self.ref_model = FrozenBase(self.model) if is_lora(self.model) else \
                copy.deepcopy(self.model).eval().requires_grad_(False)
        self.train_model = self.dist.wrap(self.model, self.spec.resources.strategy)
        if self.plan.values:  # the value model starts from the (warm-started) policy
            self.algo.critic.attach(self.model)
        self.engine = build_engine(cfg.rollout)
        self.plan = self.plan | self.engine.needs()  # e.g. a train–inference IS correction
        self.temperature = self.spec.rollout.temperature
        self.max_new_tokens = self.budget.tokens
        t = self.spec.train
        self.opt = adamw([p for p in self.model.parameters() if p.requires_grad], lr=t.lr,
                         betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.sched = lr_schedule(self.opt, t.scheduler, t.warmup_steps, t.steps * t.epochs * t.minibatches)
        self.rng = np.random.default_rng(self.seed)
        self.timers = Timers()
        sharded = self.dist.active and self.train_model is self.model  # FSDP2: sharded gradients
        self.meter = GradVarianceMeter([p for p in self.model.parameters() if p.requires_grad]) \
            if t.metrics.grad_var and not sharded else None
        self.last_eval: dict[str, float] = {}
        self.initial_eval: dict[str, float] = {}
        self.history_final: dict[str, float] = {}
        self.state = TrainingState(total_steps=t.steps)

    # ----------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything a checkpoint needs to continue this run exactly (see ablate/train/state.py)."""
        return {"state": self.state.state_dict(), "model": policy_state(self.model),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "rng": rng_state(self.rng), "components": tree_state(self.algo),
                "last_eval": dict(self.last_eval), "initial_eval": dict(self.initial_eval),
                "history_final": dict(self.history_final)}

    def load_state_dict(self, d: dict) -> None:
        self.state.load_state_dict(d["state"])
        load_policy_state(self.model, d["model"])
        self.opt.load_state_dict(d["optimizer"])
        self.sched.load_state_dict(d["scheduler"])
        load_rng_state(self.rng, d["rng"])
        load_tree_state(self.algo, d["components"])
        self.last_eval = dict(d["last_eval"])
        self.initial_eval = dict(d["initial_eval"])
        self.history_final = dict(d["history_final"])

    # ----------------------------------------------------------------------------------- rollout
    def _generate(self, problems, n: int, temperature: float, seed: int):
        """Sample ``n`` responses per problem; log-probs are scored later, once, on the final batch."""
        return self._sample([p.prompt for p in problems], n, temperature, seed)

    def _sample(self, prompts: list[str], n: int, temperature: float, seed: int):
        gen = torch.Generator().manual_seed(seed)  # the engine seeds a forked RNG from it
        self.model.eval()
        with torch.no_grad():
            out = self.engine.generate(self.model, self.tok, prompts, n, temperature=temperature,
                                       top_p=self.spec.rollout.top_p,
                                       max_new_tokens=self.max_new_tokens, generator=gen,
                                       compute_logprobs=False)
        return out

    def _stage_generate(self, step: int, env: StageEnv):
        """``env.generate`` for stages with Needs(generation=True): the current policy through the
        rollout engine; time in perf/extra_gen_s, tokens in train/extra_gen_tokens."""
        calls = [0]

        def generate(prompts: list[str], n: int, temperature: float) -> Generated:
            calls[0] += 1
            with self.timers("extra_gen"):
                out = self._sample(list(prompts), int(n), float(temperature),
                                   self._seed_for(step, salt=101 + 13 * calls[0]))
            P = out.prompt_len
            lens = out.response_mask.sum(-1).long().tolist()
            ids = [out.input_ids[i, P:P + k].tolist() for i, k in enumerate(lens)]
            env.stats["train/extra_gen_tokens"] = env.stats.get("train/extra_gen_tokens", 0.0) + float(sum(lens))
            return Generated(response_ids=ids, texts=list(out.texts),
                             truncated=[bool(x) for x in out.truncated])
        return generate

    def _rollouts_for(self, problems, step: int, round_: int, env: StageEnv) -> Rollouts:
        """Plan (prompt samplers, per-prompt budgets), generate and verify (each worker its share of
        the prompts, gathered), then the stages on the whole set, identically on every worker."""
        counts = [self.spec.train.group_size] * len(problems)
        for stage in self.algo.stages:  # before generation: which prompts, how many samples each
            problems, counts = stage.plan(list(problems), list(counts), env)
        problems = [p for p, c in zip(problems, counts) if c > 0]
        counts = [c for c in counts if c > 0]
        if self.dist.active and self.plan.rollouts:
            sh = self.dist.shard(len(problems))
            mine = self._sampled(problems[sh], counts[sh], step, round_)
            parts = self.dist.all_gather_object(mine)
            r = parts[0]
            for part in parts[1:]:
                r = r.extend(part)
        else:
            r = self._sampled(problems, counts, step, round_)
        if not r.problems:
            return r
        for stage in self.algo.stages:
            r = stage(r, env)
        return r

    def _sampled(self, problems, counts: list[int], step: int, round_: int) -> Rollouts:
        """``counts[j]`` samples of problem j (group sizes may differ within a batch)."""
        r = Rollouts(problems=list(problems))
        if not problems:
            return r
        if not self.plan.rollouts:
            r.prompt_ids = [self.tok(p.prompt)["input_ids"] for p in problems]
        else:
            seed = self._seed_for(step, round_, salt=1_000_033 * self.dist.rank)
            owner = [j for j, c in enumerate(counts) for _ in range(c)]  # row → prompt
            if len(set(counts)) == 1:  # one batched call with n per prompt (uniform groups)
                out = self._generate(problems, counts[0], self.temperature, seed)
            else:  # variable group sizes: each prompt repeated by its count, one sample each
                out = self._generate([problems[j] for j in owner], 1, self.temperature, seed)
            P = out.prompt_len
            first = {j: i for i, j in reversed(list(enumerate(owner)))}
            ids = out.input_ids.tolist()  # one conversion, then list slices (not one per row)
            starts = (P - out.attention_mask[:, :P].sum(-1)).tolist()  # prompts are left-padded
            r.prompt_ids.extend(ids[first[j]][starts[first[j]]:P] for j in range(len(problems)))
            lens = out.response_mask.sum(-1).long().tolist()
            eng = out.engine_logp.tolist() if out.engine_logp is not None else None
            for i, row in enumerate(ids):
                j = owner[i]
                rew = self.task.verify(problems[j], out.texts[i])
                r.add_row(j, row[P:P + lens[i]], out.texts[i], float(rew.total),
                          dict(rew.components), is_demo=False, truncated=bool(out.truncated[i]),
                          meta=rew.meta, engine_logp=eng[i][: lens[i]] if eng is not None else None)
        return r

    def _seed_for(self, step: int, round_: int = 0, salt: int = 0) -> int:
        return (self.seed * 1_000_003 + step * 7_919 + round_ * 104_729 + salt) % (2**31 - 1)

    def collect(self, step: int) -> tuple[Rollouts, dict[str, float]]:
        """Sample prompts, generate, verify, run the stages; refill if a stage dropped groups."""
        P = self.spec.train.prompts_per_step
        env = StageEnv(tokenizer=self.tok, task=self.task, max_new_tokens=self.max_new_tokens, step=step,
                       info=self.state.info() if self.plan.step_info else None,
                       rng=self.rng, group_size=self.spec.train.group_size)
        if self.plan.generation:
            env.generate = self._stage_generate(step, env)
        rounds = max(1, int(self.plan.refill_rounds))
        total: Optional[Rollouts] = None
        for round_ in range(rounds):
            problems = self.task.train_problems(P, self.rng)
            r = self._rollouts_for(problems, step, round_, env)
            total = r if total is None else total.extend(r)
            if len(total.problems) >= P:
                break
        assert total is not None
        if len(total.problems) > P:  # trim to exactly the prompt budget
            total = total.keep_rows([i for i, g in enumerate(total.group) if g < P])
        env.stats["train/gen_rounds"] = float(round_ + 1)
        return total, env.stats

    # ----------------------------------------------------------------------------------- batch
    def assemble(self, r: Rollouts) -> RolloutBatch:
        """Pad prompts left and responses right into one RolloutBatch (old/ref log-probs filled)."""
        if len(r) == 0:
            raise RuntimeError("the pipeline left no samples this step (all groups filtered out)")
        packed = pack([r.prompt_ids[g] for g in r.group], r.response_ids, self.tok.pad_token_id)
        rm = packed["response_mask"]
        names = list(self.task.reward_names or ())
        comps = None
        if names and any(r.components):
            comps = torch.tensor([[float(c.get(n, 0.0)) for n in names] for c in r.components],
                                 dtype=torch.float32)
        batch = RolloutBatch(
            input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
            response_mask=rm, old_logp=torch.zeros(rm.shape),
            rewards=torch.tensor(r.rewards, dtype=torch.float32),
            group_ids=torch.tensor(r.group, dtype=torch.long), prompt_len=packed["prompt_len"],
            reward_components=comps, is_demo=torch.tensor(r.is_demo, dtype=torch.bool),
            loss_weights=(torch.tensor(r.loss_weight, dtype=torch.float32)
                          if any(w != 1.0 for w in r.loss_weight) else None),
        ).to(self.device)
        batch.rows = self._row_data(r, batch, names)
        if self.plan.step_info:
            batch.info = self.state.info()
        if self.ref_model is not None:
            with self.timers("logp"), torch.no_grad():
                batch.ref_logp = self._logp_no_grad(self.ref_model, batch)[0]
        if self.plan.prescoring:
            self._prescore(batch)
        if self.engine.is_correction != "none":
            self._is_correction(r, batch)
        if self.plan.values:
            with self.timers("values"):
                batch.rows["values"] = self.algo.critic.score(batch)
        return batch  # otherwise old_logp is filled by update(): see _fill_old_logp

    def _is_correction(self, r: Rollouts, batch: RolloutBatch) -> None:
        """Per-token train–inference weights π_old/π_engine (rows without engine log-probs: 1)."""
        eng = torch.zeros_like(batch.old_logp)
        has = torch.zeros(batch.batch_size, dtype=torch.bool, device=eng.device)
        for i, lp in enumerate(r.engine_logp):
            if lp:
                eng[i, :len(lp)] = torch.tensor(lp, dtype=eng.dtype)
                has[i] = True
        w = is_weights(batch.old_logp, eng, self.engine.is_correction, self.engine.is_cap)
        batch.rows["engine_logp"] = eng
        batch.rows["is_weight"] = torch.where(has[:, None], w, torch.ones_like(w)) * batch.response_mask

    def _row_data(self, r: Rollouts, batch: RolloutBatch, names: list[str]) -> dict:
        """Per-row side data every component may read (sliced with the rows, see RolloutBatch)."""
        dev = batch.response_mask.device
        gm, gv, gs = group_reward_stats(batch.rewards, batch.group_ids, ~batch.demo_mask())
        rows: dict = {"truncated": torch.tensor(r.truncated, dtype=torch.bool, device=dev),
                      "group_size": gs, "group_reward_mean": gm, "group_reward_var": gv,
                      "meta": list(r.meta), "answer": [r.problems[g].answer for g in r.group],
                      "prompt": [r.problems[g].prompt for g in r.group]}
        if batch.reward_components is not None:
            for k, n in enumerate(names):
                rows[f"reward/{n}"] = batch.reward_components[:, k]
        return rows

    def _prescore(self, batch: RolloutBatch) -> None:
        """The scoring a component asked for before the advantage: behaviour log-probs of every row,
        the behaviour policy's entropy, log-probs at extra temperatures (one no-grad pass each)."""
        with self.timers("logp"), torch.no_grad():
            self.model.eval()
            lp, ent = self._logp_no_grad(self.model, batch, with_entropy=self.plan.entropy_before_advantage)
            batch.old_logp = lp
            batch.extras["old_logp_complete"] = True
            if ent is not None:
                batch.rows["old_entropy"] = ent
            for t in sorted(self.plan.temperatures):
                batch.rows[_temp_key(t)] = self._logp_no_grad(self.model, batch, temperature=float(t))[0]

    def _fill_old_logp(self, batch: RolloutBatch, first_rows: torch.Tensor,
                       needed: Optional[torch.Tensor] = None) -> None:
        """Behaviour log-probs, scored once. Rows of the first minibatch are trained before any
        optimizer step, so π_old = π_θ there and their first training forward provides old_logp
        (no extra pass; with one minibatch and one epoch there is no extra forward at all, like TRL
        with num_iterations=1). Only the other rows need a no-grad forward now."""
        if batch.extras.get("old_logp_complete"):
            return
        rest = torch.ones(batch.batch_size, dtype=torch.bool) if needed is None else needed.clone()
        rest[first_rows] = False
        if bool(rest.any()):
            idx = rest.nonzero().squeeze(-1).to(self.device)
            with self.timers("logp"), torch.no_grad():
                self.model.eval()
                batch.old_logp[idx] = self._logp_no_grad(self.model, batch.select(idx))[0]

    def _logp_no_grad(self, model, batch: RolloutBatch, with_entropy: bool = False,
                      temperature: Optional[float] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(log-probs, entropy or None) of every row, zero on padding, in microbatch-sized chunks."""
        parts, ents = [], []
        temp = self.temperature if temperature is None else temperature
        for idx in _chunks(batch.batch_size, self.spec.train.microbatches):
            lp, ent = token_logprobs(model, batch.input_ids[idx], batch.attention_mask[idx],
                                     batch.prompt_len, temp, with_entropy=with_entropy)
            parts.append(lp)
            if ent is not None:
                ents.append(ent)
        rm = batch.response_mask
        return torch.cat(parts, 0) * rm, (torch.cat(ents, 0) * rm if ents else None)

    # ----------------------------------------------------------------------------------- update
    def _local_rows(self, batch: RolloutBatch) -> torch.Tensor:
        """Rows of this worker's share of the prompt groups (all rows on a single worker)."""
        ids = batch.group_ids.cpu()
        groups = torch.unique(ids)
        mine = groups[self.dist.shard(len(groups))]
        return torch.nonzero(torch.isin(ids, mine)).reshape(-1)

    def update(self, batch: RolloutBatch, step: int) -> dict[str, float]:
        t = self.spec.train
        obj = self.objective
        dist = self.dist
        reducer = dist if dist.active else None
        sync_ids = batch.input_ids[:1, :1]
        # the minibatches are cut from the whole batch exactly as on one worker; each worker trains
        # on the rows of its own prompts in each of them (the advantages saw the whole batch)
        local = torch.zeros(batch.batch_size, dtype=torch.bool)
        local[self._local_rows(batch)] = True
        want_entropy = t.metrics.entropy or self.plan.entropy
        ent_grad = self.plan.entropy_grad
        # diagnostics stay on the device as tensors; one host sync per step (below), none per microbatch
        acc = DiagAccumulator()
        ent = torch.zeros(2, dtype=torch.float64, device=self.device)  # Σ H·m, Σ m
        steps_done, skipped, n_minibatches = 0, 0, 0
        gv_acc: dict[str, list[float]] = {}
        gen = torch.Generator().manual_seed(self._seed_for(step, salt=17))
        groups = batch.group_ids.cpu() if self.plan.whole_groups else None
        k_mb = t.minibatches
        epochs = [[rows[local[rows]] for rows in partition(batch.batch_size, k_mb, gen, groups)]
                  for _ in range(t.epochs)]
        self._fill_old_logp(batch, epochs[0][0], local)
        self.model.train()
        for epoch, minibatches in enumerate(epochs):
            for mb_no, mb_rows_cpu in enumerate(minibatches):
                on_policy = epoch == 0 and mb_no == 0  # no optimizer step yet: π_old = π_θ
                mb_rows = mb_rows_cpu.to(self.device)
                mb = batch.select(mb_rows)
                chunks = self._microbatches(batch, mb_rows_cpu, groups)
                norms = obj.normalizers(mb, reducer, num_chunks=len(chunks))
                self.opt.zero_grad(set_to_none=True)
                if self.meter is not None:
                    self.meter.start()
                unit_weight = 0.0
                for ci, (mc_idx_cpu, closes_unit) in enumerate(chunks):
                    mc_idx = mc_idx_cpu.to(self.device)
                    mc = mb.select(mc_idx)
                    with self.timers("forward_backward"), self._no_sync():
                        logp, ent_t, logits, hidden = self._train_forward(mc, want_entropy or ent_grad,
                                                                          ent_grad)
                        if on_policy and not batch.extras.get("old_logp_complete"):
                            mc.old_logp = logp.detach() * mc.response_mask
                            batch.old_logp[mb_rows[mc_idx]] = mc.old_logp
                        with self.timers("estimator"):
                            out = obj(mc, logp, norms, entropy=ent_t,
                                      entropy_grad=ent_t if ent_grad else None, logits=logits,
                                      hidden=hidden, lr=float(self.sched.get_last_lr()[0])
                                      if hidden is not None else None)
                        if not torch.isfinite(out.loss):
                            raise FloatingPointError(f"non-finite loss {out.loss.item()} at step {step}")
                        (out.loss * dist.world).backward()  # DDP averages over workers
                    if self.meter is not None:  # one grad-var draw per whole-group unit
                        unit_weight += obj.chunk_weight(mc)
                        if closes_unit:
                            self.meter.after_backward(weight=unit_weight, last=ci == len(chunks) - 1)
                            unit_weight = 0.0
                    with self.timers("metrics"):
                        acc.add(out.diags, out.num_tokens)
                        if ent_t is not None:
                            es, ec = token_entropy_sum_count(ent_t.detach(), mc.response_mask)
                            ent = ent + torch.stack([es, ec]).to(ent)
                n_minibatches += 1
                with self.timers("optimizer"):
                    self._sync_grads(sync_ids)
                    if self.meter is not None:
                        res = self.meter.finish(reducer=reducer, scale=1.0 / dist.world) \
                            if chunks or dist.active else {}
                        for k, v in res.items():
                            if v is not None:
                                gv_acc.setdefault(k, []).append(float(v))
                    gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                           t.max_grad_norm)
                    gnorm_f = float(gnorm)
                    gv_acc.setdefault("train/grad_norm_preclip", []).append(gnorm_f)
                    if not math.isfinite(gnorm_f) or (t.skip_grad_norm and gnorm_f > t.skip_grad_norm):
                        skipped += 1
                        self.opt.zero_grad(set_to_none=True)
                    else:
                        self.opt.step()
                        self.sched.step()
                        steps_done += 1
        m = acc.result(prefix="train/", minibatches=n_minibatches, reducer=reducer)
        ent = dist.all_reduce(ent)
        if (want_entropy or ent_grad) and float(ent[1]) > 0:
            m["train/entropy"] = float(ent[0] / ent[1])
        for k, vs in gv_acc.items():
            m[k if k.startswith("train/") else f"train/{k}"] = float(np.mean(vs))
        if "train/grad_norm" not in m and "train/grad_norm_preclip" in m:
            m["train/grad_norm"] = m["train/grad_norm_preclip"]
        m["train/optimizer_steps"] = float(steps_done)
        m["train/skipped_steps"] = float(skipped)
        m["train/lr"] = float(self.sched.get_last_lr()[0])
        return m

    def _train_forward(self, mc: RolloutBatch, with_entropy: bool, entropy_grad: bool
                       ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor],
                                  Optional[torch.Tensor]]:
        """(log-probs, entropy, full-vocabulary logits, last-layer hidden states) of one
        microbatch; the logits only when a component declared ``Needs(full_logits=True)``
        (otherwise nothing [B, T, V] is kept), the hidden states only with
        ``Needs(hidden_states=True)``."""
        plan = self.plan
        if not plan.full_logits and not plan.hidden_states:
            logp, ent = token_logprobs(self.train_model, mc.input_ids, mc.attention_mask,
                                       mc.prompt_len, self.temperature, with_entropy=with_entropy,
                                       entropy_grad=entropy_grad)
            return logp, ent, None, None
        logits, hidden = response_outputs(self.train_model, mc.input_ids, mc.attention_mask,
                                          mc.prompt_len, self.temperature,
                                          with_hidden=plan.hidden_states)
        logp, ent = logprobs_of_logits(logits, mc.input_ids[:, mc.prompt_len:], with_entropy,
                                       entropy_grad)
        return logp, ent, (logits if plan.full_logits else None), hidden

    def _microbatches(self, batch: RolloutBatch, mb_rows: torch.Tensor,
                      groups: Optional[torch.Tensor]) -> list[tuple[torch.Tensor, bool]]:
        """One minibatch's microbatches as (rows, closes a grad-var unit): whole groups when a
        component needs them; whole-group units when train/grad_var is measured (its estimator
        needs independent units, and a prompt's responses are coupled: ablate/metrics/gradvar.py);
        else row chunks. The gradient is the same either way (losses use minibatch totals)."""
        n, k = mb_rows.numel(), self.spec.train.microbatches
        if n == 0:
            return []
        if groups is not None:
            return [(c, True) for c in partition(n, k, None, groups[mb_rows])]
        if self.meter is not None:
            return group_units(batch.group_ids.cpu()[mb_rows], k)
        return [(c, True) for c in partition(n, k, None)]

    @contextmanager
    def _no_sync(self) -> Iterator[None]:
        """Accumulate locally: workers exchange gradients once per minibatch (``_sync_grads``)."""
        if self.train_model is self.model:
            yield
        else:
            with self.train_model.no_sync():
                yield

    def _sync_grads(self, ids: torch.Tensor) -> None:
        """All-reduce the accumulated gradients through DDP: a zero-weighted forward/backward on one
        token leaves each worker's gradient at the average of the workers' accumulations (DDP
        includes gradients accumulated under ``no_sync`` in the next synchronised backward)."""
        if self.train_model is self.model:
            return
        out = self.train_model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        (out.logits.float().sum() * 0.0).backward()

    # ----------------------------------------------------------------------------------- eval
    def evaluate(self, step: int) -> tuple[dict[str, float], list[dict]]:
        """Pass@k metrics and logged samples of the eval split (see ``evaluate_prompts``)."""
        ev, samples, _ = self.evaluate_prompts(step)
        return ev, samples

    def evaluate_prompts(self, step: int) -> tuple[dict[str, float], list[dict], dict[str, list]]:
        """Pass@k metrics, logged samples and the per-prompt counts they come from:
        ``{"prompt_id": [...], "n": [...], "c": [...]}`` (kept in the run store's eval_prompts.jsonl,
        the data ``ablate.stats.prompts`` models with seeds and prompts as separate effects).
        With an eval cache, an eval whose inputs another run already evaluated is read back."""
        if self.eval_cache is None or self.dist.active:
            return self._evaluate_prompts(step)
        return self.eval_cache.get_or_compute(self._eval_key(step), lambda: self._evaluate_prompts(step))

    def _eval_key(self, step: int) -> str:
        """Every input ``_evaluate_prompts(step)``'s result depends on; nothing else."""
        from omegaconf import OmegaConf

        c = self.cfg
        problems = self.task.eval_problems(self.spec.eval.num_prompts)
        plain = {k: OmegaConf.to_container(c[k], resolve=True) for k in ("rollout", "model", "task")}
        plain["eval"] = self.spec.eval.model_dump(exclude={"cache"})
        return digest({"weights": weights_digest(self.model), "tokenizer": tokenizer_identity(self.tok),
                       "prompts": [[p.uid, p.prompt, p.answer, p.meta] for p in problems],
                       "seed": self.seed, "step": step, "temperature": self.temperature,
                       "max_new_tokens": self.max_new_tokens, "config": plain,
                       "task": [type(self.task).__qualname__, self.task.spec()],
                       "device": str(self.device), "threads": torch.get_num_threads()})

    def _evaluate_prompts(self, step: int) -> tuple[dict[str, float], list[dict], dict[str, list]]:
        e = self.spec.eval
        problems = self.task.eval_problems(e.num_prompts)
        if self.dist.active:  # each worker its share of the eval prompts; Pass@k over all of them
            problems = problems[self.dist.shard(len(problems))]
        n = e.n
        temp = e.temperature if e.temperature is not None else self.temperature
        correct = np.zeros((len(problems), n), dtype=np.float64)
        samples: list[dict] = []
        chunk = max(1, 256 // n)
        with torch.random.fork_rng():
            for s in range(0, len(problems), chunk):
                probs = problems[s: s + chunk]
                out = self._generate(probs, n, temp, self._seed_for(step, salt=31 + s))
                for i, text in enumerate(out.texts):
                    j = i // n
                    rew = self.task.verify(probs[j], text)
                    correct[s + j, i % n] = 1.0 if rew.total >= 1.0 else 0.0
                    if len(samples) < e.num_samples_logged and i % n == 0:
                        samples.append({"step": step, "prompt": probs[j].prompt, "response": text,
                                        "reward": float(rew.total), "answer": probs[j].answer})
        ids = [p.uid for p in problems]
        if self.dist.active:
            parts = self.dist.all_gather_object((correct, samples, ids))
            correct = np.concatenate([c for c, _, _ in parts if len(c)], 0)
            samples = [x for _, ss, _ in parts for x in ss][: e.num_samples_logged]
            ids = [x for _, _, ii in parts for x in ii]
        per_prompt = {"prompt_id": ids, "n": [n] * len(ids),
                      "c": [int(x) for x in correct.sum(1).round().astype(int)]}
        return pass_at_k_metrics(correct), samples, per_prompt

    # ----------------------------------------------------------------------------------- loop
    def _emit(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        self.history_final.update(clean)
        with self.timers("logging"):
            if self.tracker is not None:
                self.tracker.log(clean, step=step)
        if self.reporter is not None:
            self.reporter({**self.last_eval, **clean, "step": step})

    def run(self, progress: bool = True) -> dict:
        from tqdm.auto import tqdm

        steps = self.spec.train.steps
        every = self.spec.eval.every
        t_start = time.perf_counter()
        start = self.state.step + 1  # > 1 when resumed from a checkpoint (load_state_dict)
        if start == 1:
            ev, samples, per_prompt = self.evaluate_prompts(0)
            self.last_eval = dict(ev)
            self.initial_eval = dict(ev)
            if self.tracker is not None:
                self.tracker.log_samples(samples, step=0)
                self.tracker.log_eval_prompts(**per_prompt, step=0)
            self._emit({**ev, "eval/step": 0.0}, step=0)
        bar = tqdm(range(start, steps + 1), initial=start - 1, total=steps,
                   desc=self.spec.name or "train", disable=not progress,
                   dynamic_ncols=True, leave=False)
        for step in bar:
            t0 = time.perf_counter()
            with self.timers("rollout"):
                rollouts, stage_stats = self.collect(step)
            batch = self.assemble(rollouts)
            with self.timers("advantage"):
                self.objective.compute_advantages(batch)
            m = self.update(batch, step)
            if m["train/optimizer_steps"] > 0:  # the engine samples the next step from these weights
                with self.timers("weight_sync"):
                    self.engine.sync_weights(self.model)
            if self.plan.values:  # the value model trains on the targets the advantage wrote
                with self.timers("critic"):
                    m.update(self.algo.critic.update(batch, step))
            m.update(stage_stats)
            with self.timers("metrics"):
                rm = batch.response_mask
                on = ~batch.demo_mask()
                m["train/reward_mean"] = float(batch.rewards[on].mean()) if bool(on.any()) else float("nan")
                m["train/response_len"] = float(rm.sum(-1)[on].float().mean()) if bool(on.any()) else 0.0
                for tag, sel in (("correct", on & (batch.rewards > 0)), ("incorrect", on & (batch.rewards <= 0))):
                    # length dynamics split by outcome (Dr. GRPO's claim is about incorrect answers);
                    # not logged in a step without such rows
                    if bool(sel.any()):
                        m[f"train/response_len_{tag}"] = float(rm.sum(-1)[sel].float().mean())
                m["train/truncated_frac"] = float(np.mean([x for x, d in zip(rollouts.truncated, rollouts.is_demo) if not d] or [0.0]))
                if batch.advantages is not None:  # objectives without an advantage slot log none
                    m["train/frac_zero_adv_groups"] = float(zero_advantage_group_fraction(
                        batch.advantages, batch.group_ids, rm))
                m["train/batch_rows"] = float(batch.batch_size)
                m["train/demo_frac"] = float(batch.demo_mask().float().mean())
            step_s = time.perf_counter() - t0
            m["perf/step_s"] = step_s
            m["perf/tokens_per_s"] = float(rm.sum()) / max(step_s, 1e-9)
            if (every and step % every == 0) or step == steps:
                with self.timers("eval"):
                    ev, samples, per_prompt = self.evaluate_prompts(step)
                self.last_eval = dict(ev)
                m.update(ev)
                m["eval/step"] = float(step)
                if self.tracker is not None:
                    self.tracker.log_samples(samples, step=step)
                    self.tracker.log_eval_prompts(**per_prompt, step=step)
            for k, v in self.timers.pop().items():
                m[f"perf/{k}_s"] = v
            observe_tree(self.algo, self.state.info(), m)
            self.state.step = step
            self.state.last_metrics = dict(m)
            self._emit(m, step)
            if self.on_step_end is not None:
                self.on_step_end(self, step)
            if progress:
                bar.set_postfix(reward=f"{m['train/reward_mean']:.2f}",
                                pass1=f"{self.last_eval.get('eval/pass@1', float('nan')):.2f}")
        bar.close()
        wall = time.perf_counter() - t_start
        return {"final": dict(self.history_final), "initial_eval": self.initial_eval,
                "wall_s": wall, "steps_done": steps}
