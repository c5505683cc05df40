"""The one list of config groups and component families: every other module imports these names.

A *group* is a folder of conf/ that a run chooses one file of (``mask=clip_higher``); the order is
conf/config.yaml's defaults list. A *family* is a kind of component built from a ``_target_``; its
base class (named here as a dotted path, so this module imports nothing of ablate) is what every
``_target_`` of the family must subclass. tests/test_groups.py checks both against conf/ and the
classes, so a new folder or base class cannot drift from this list.
"""

from __future__ import annotations

# the four slots of the Unified Policy Gradient Estimator (DESIGN.md §1)
UPGE_SLOTS: tuple[str, ...] = ("mask", "denominator", "advantage", "likelihood")
# the estimator choices a run records, a sweep's `slots:` usually crosses and a report compares
SLOT_FAMILIES: tuple[str, ...] = UPGE_SLOTS + ("aggregation",)
# options outside the four slots that a method preset may also set
PRESET_OPTIONS: tuple[str, ...] = ("aggregation", "regularizers", "pipeline", "objective")
# every config group, in conf/config.yaml's defaults order (critic included)
GROUPS: tuple[str, ...] = SLOT_FAMILIES + ("regularizers", "objective", "pipeline", "critic", "task",
                                           "model", "rollout", "tracker", "method")
# groups a search space may sweep under `slots:` (`method` is swept with `methods:`)
SWEEP_GROUPS: tuple[str, ...] = tuple(g for g in GROUPS if g != "method")
# groups whose choice tags a run (W&B tags, run name parts)
TAG_GROUPS: tuple[str, ...] = SLOT_FAMILIES + ("method", "task")

# family -> dotted path of its base class
FAMILY_BASES: dict[str, str] = {
    "mask": "ablate.upge.slots.base.Mask",
    "denominator": "ablate.upge.slots.base.Denominator",
    "advantage": "ablate.upge.slots.base.Advantage",
    "likelihood": "ablate.upge.slots.base.Likelihood",
    "aggregation": "ablate.upge.aggregation.Aggregation",
    "regularizer": "ablate.upge.slots.base.Regularizer",
    "term": "ablate.objectives.base.Term",
    "stage": "ablate.pipeline.base.Stage",
    "critic": "ablate.critic.value_model.ValueModel",
    "task": "ablate.tasks.base.Task",
    "rollout": "ablate.rollout.base.RolloutEngine",
}


def base_name(family: str) -> str:
    """The class name of ``family``'s base (``Mask``), for messages and annotation matching."""
    return FAMILY_BASES[family].rpartition(".")[2]
