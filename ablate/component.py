"""The component contract shared by every configurable part (slots, terms, regularizers, stages).

A component *declares* what it needs (``needs()``), may keep state that a trial checkpoint saves
(``state_dict``/``load_state_dict``), and may watch the training loop (``observe``, once after every
step). The trainer plans a step from the union of the declared needs; it never inspects a component's
attributes and never names a method (DESIGN §1.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterator, Mapping

from ablate.spec.params import Checked


@dataclass(frozen=True)
class Needs:
    """What a component needs the trainer to provide. ``a | b`` is the union (what both need).

    Scoring fields run one no-grad pass over the whole batch *before* the advantage slot, and only
    when some component asks; otherwise behaviour log-probs come lazily from the first training
    forward (no extra pass, as today).
    """

    entropy: bool = False  # ctx.entropy: detached per-token entropy of π_θ in the training forward
    entropy_grad: bool = False  # ctx.entropy_grad: per-token entropy carrying the gradient
    full_logits: bool = False  # ctx.logits: [B, T, V] logits/temperature of π_θ at the response
    #                            positions, carrying the gradient (training forward only; off: no
    #                            [B, T, V] tensor is kept beyond the log-softmax)
    hidden_states: bool = False  # ctx.hidden: [B, T, H] detached last-layer hidden states at the
    #                              response positions (the LM head's input) and ctx.lr, the learning
    #                              rate of the coming optimizer step (training forward only)
    ref_model: bool = False  # a frozen copy of the initial policy: batch.ref_logp before the advantage
    logp_before_advantage: bool = False  # batch.old_logp complete before the advantage slot
    entropy_before_advantage: bool = False  # batch.rows["old_entropy"]: behaviour entropy per token
    temperatures: frozenset = frozenset()  # batch.rows[f"old_logp@{T:g}"]: behaviour log-probs at T
    whole_groups: bool = False  # minibatches and microbatches keep each prompt's rows together
    step_info: bool = False  # batch.info / ctx.info: step, total steps, last step's metrics
    refill_rounds: int = 1  # stages: generation rounds allowed to refill groups a stage dropped
    rollouts: bool = True  # stages: False = the stage builds its rows itself (no generation)
    values: bool = False  # a value model scores batch.rows["values"] [B, T] before the advantage
    #                       and is trained after the policy step (Algorithm.critic)
    generation: bool = False  # stages: StageEnv.generate samples with the current policy

    def __or__(self, other: "Needs") -> "Needs":
        out: dict[str, Any] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "rollouts":
                out[f.name] = a and b
            elif f.name == "refill_rounds":
                out[f.name] = max(a, b)
            elif f.name == "temperatures":
                out[f.name] = frozenset(a) | frozenset(b)
            else:
                out[f.name] = a or b
        return Needs(**out)

    @property
    def prescoring(self) -> bool:
        """A no-grad scoring pass over the whole batch must run before the advantage slot."""
        return self.logp_before_advantage or self.entropy_before_advantage or bool(self.temperatures)


@dataclass(frozen=True)
class Schedule:
    """What a run's update schedule makes possible (the facts ``Acts`` is checked against)."""

    updates_per_batch: int = 1  # optimizer steps per rollout batch: train.epochs × train.minibatches
    off_policy: bool = False  # some rows carry behaviour log-probs not from the policy being trained

    @property
    def drift(self) -> bool:
        """π_θ ≠ π_old is possible at some update: a later optimizer step on the same batch, or
        off-policy rows."""
        return self.updates_per_batch > 1 or self.off_policy

    def describe(self) -> str:
        rows = "off-policy rows" if self.off_policy else "on-policy rows only"
        return f"{self.updates_per_batch} optimizer step(s) per rollout batch, {rows}"


@dataclass(frozen=True)
class Acts:
    """When a component can change the gradient, so that choosing (or ablating) it can matter.

    ``policy_drift``: it acts only where π_θ ≠ π_old (ratio masks and clips, clipped or sequence IS
    weights, ratio penalties); with π_θ = π_old at every update it equals its family's neutral
    choice. ``neutral``: it *is* the neutral choice (mask none, denominator π_θ): never acts.
    ``off_policy_rows``: it supplies rows whose behaviour log-probs are not the trained policy's
    (so π_θ ≠ π_old already at the first update)."""

    policy_drift: bool = False
    neutral: bool = False
    off_policy_rows: bool = False

    def can_act(self, schedule: Schedule) -> bool:
        return not self.neutral and (not self.policy_drift or schedule.drift)


ACTS_ALWAYS = Acts()
ACTS_ON_DRIFT = Acts(policy_drift=True)
ACTS_NEUTRAL = Acts(neutral=True)


def acts_of_all(parts) -> Acts:
    """A composite (all of several masks, per-row routing) is inert only where all its parts are."""
    acts = [p.acts() for p in parts]
    return Acts(policy_drift=all(a.policy_drift or a.neutral for a in acts) and
                not all(a.neutral for a in acts),
                neutral=all(a.neutral for a in acts),
                off_policy_rows=any(a.off_policy_rows for a in acts))


@dataclass(frozen=True)
class StepInfo:
    """Step context a component may read (declared with ``Needs(step_info=True)``)."""

    step: int  # 1-based RL step being trained
    total_steps: int
    last_metrics: Mapping[str, float] = field(default_factory=dict)  # the previous step's metrics

    @property
    def progress(self) -> float:
        """Fraction of training done before this step, in [0, 1) (for schedules)."""
        return (self.step - 1) / max(1, self.total_steps)


class Component(Checked):
    """Base of every configurable part. ``family`` groups variants for `ablate slots`; constructor
    parameters are typed and checked by :mod:`ablate.spec.params`."""

    family: ClassVar[str] = ""
    NEEDS: ClassVar[Needs] = Needs()  # what every instance of the class needs
    ACTS: ClassVar[Acts] = ACTS_ALWAYS  # when every instance of the class can act

    def acts(self) -> Acts:
        """When this component can act (override when it depends on parameters or parts)."""
        return self.ACTS

    def needs(self) -> Needs:
        """This component's needs and its parts' (override when they depend on parameters)."""
        out = self.NEEDS
        for _, child in self.children():
            out = out | child.needs()
        return out

    def children(self) -> Iterator[tuple[str, "Component"]]:
        """Direct sub-components (e.g. the masks of ``AllOf``), found among the attributes."""
        for name, v in vars(self).items():
            if isinstance(v, Component):
                yield name, v
            elif isinstance(v, (list, tuple)):
                for i, x in enumerate(v):
                    if isinstance(x, Component):
                        yield f"{name}.{i}", x
            elif isinstance(v, dict):
                for k, x in v.items():
                    if isinstance(x, Component):
                        yield f"{name}.{k}", x

    def walk(self, prefix: str = "") -> Iterator[tuple[str, "Component"]]:
        """This component and all its parts, depth first, with dotted paths."""
        yield prefix, self
        for name, child in self.children():
            yield from child.walk(f"{prefix}.{name}" if prefix else name)

    # ------------------------------------------------------------------ training state
    def state_dict(self) -> dict:
        """State that must survive a checkpoint (adaptive coefficients, trackers, dual variables)."""
        return {}

    def load_state_dict(self, state: Mapping) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")

    def observe(self, info: StepInfo, metrics: Mapping[str, float]) -> None:
        """Called once after every training step with that step's metrics (default: nothing)."""

    # ------------------------------------------------------------------ display
    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def union_needs(components) -> Needs:
    out = Needs()
    for c in components:
        out = out | c.needs()
    return out


def tree_state(root: Component) -> dict[str, dict]:
    """{path: state} for every part of ``root`` that keeps state."""
    return {path: s for path, c in root.walk() if (s := c.state_dict())}


def load_tree_state(root: Component, state: Mapping[str, Mapping]) -> None:
    parts = dict(root.walk())
    unknown = sorted(set(state) - set(parts))
    if unknown:
        raise ValueError(f"checkpoint has state for unknown components {unknown}")
    for path, c in parts.items():
        c.load_state_dict(state.get(path, {}))


def schedule_of(root: Component, epochs: int, minibatches: int) -> Schedule:
    """The schedule of a run: its train.epochs × train.minibatches, and off-policy rows when some
    part of ``root`` declares it supplies them."""
    off = any(c.acts().off_policy_rows for _, c in root.walk())
    return Schedule(updates_per_batch=int(epochs) * int(minibatches), off_policy=off)


def inert_parts(root: Component, schedule: Schedule) -> list[tuple[str, Component]]:
    """Chosen parts that cannot act under ``schedule`` (neutral choices are not reported; a part
    inside an inert one is not reported again)."""
    out: list[tuple[str, Component]] = []

    def visit(path: str, c: Component) -> None:
        a = c.acts()
        if not a.neutral and not a.can_act(schedule):
            out.append((path, c))
            return
        for name, child in c.children():
            visit(f"{path}.{name}" if path else name, child)
    visit("", root)
    return out


def effective_signature(root: Component, schedule: Schedule) -> tuple:
    """What the run's gradient can depend on: every part's class and own parameters, with parts that
    cannot act under ``schedule`` (and neutral ones) reduced to their family's neutral choice. Two
    configs with equal signatures train identically (the sweep preflight's inert-factor check)."""
    out: list = [("schedule", schedule.updates_per_batch, schedule.off_policy)]

    def visit(path: str, c: Component) -> None:
        if not c.acts().can_act(schedule):
            out.append((path, "neutral", c.family))
            return
        own = tuple(sorted((k, repr(v)) for k, v in vars(c).items()
                           if not k.startswith("_") and not _holds_component(v)))
        out.append((path, type(c).__module__, type(c).__qualname__, own))
        for name, child in c.children():
            visit(f"{path}.{name}" if path else name, child)
    visit("", root)
    return tuple(out)


def _holds_component(v: Any) -> bool:
    if isinstance(v, Component):
        return True
    if isinstance(v, (list, tuple)):
        return any(isinstance(x, Component) for x in v)
    if isinstance(v, dict):
        return any(isinstance(x, Component) for x in v.values())
    return False


def inert_note(root: Component, schedule: Schedule) -> str:
    """One line for `ablate train` when chosen parts cannot act ('' when all can)."""
    parts = inert_parts(root, schedule)
    if not parts:
        return ""
    names = ", ".join(f"{c.family or 'part'} {type(c).__name__} ({p})" for p, c in parts)
    return (f"note: cannot act under this schedule ({schedule.describe()}, so π_θ = π_old at every "
            f"update): {names}; the run trains exactly as with the neutral choices (mask none, "
            "denominator π_θ, no ratio penalty). Raise train.epochs or train.minibatches for them to matter")


def observe_tree(root: Component, info: StepInfo, metrics: Mapping[str, float]) -> None:
    for _, c in root.walk():
        c.observe(info, metrics)
