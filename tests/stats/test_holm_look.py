"""One look of a Holm-recycled group-sequential family (ablate.stats.sequential.holm_look)."""

import numpy as np

from ablate.stats import SequentialPlan
from ablate.stats.sequential import holm_look, look


def test_a_rejection_passes_its_alpha_on_and_the_order_is_by_p():
    plan = SequentialPlan(n_min=4, n_max=8, batch=2)
    k = len(plan.ns) - 1  # the last look: its boundary is the largest
    rng = np.random.default_rng(0)
    strong = 1.0 + 0.05 * rng.standard_normal(8)  # p far below any level
    weak = 0.1 + 0.12 * rng.standard_normal(8)
    family = {"weak": (weak, {"expect": "higher"}), "strong": (strong, {"expect": "higher"})}
    out, rejected = holm_look(family, plan, k, m=2, rejected=0, last=True)
    assert list(out) == ["strong", "weak"]  # smallest p first
    assert out["strong"].decision == "reproduced" and rejected >= 1
    # the strong one was tested at α/2, the weak one at α/(2 − 1) once the strong one was rejected
    assert out["strong"].level == plan.level(k, plan.alpha / 2)
    assert out["weak"].level == plan.level(k, plan.alpha)
    assert out["weak"].p_value == look(weak, plan.alpha).p_value
    _, none_rejected = holm_look({"weak": family["weak"]}, plan, k, m=2, rejected=0, last=True)
    assert none_rejected == (out["weak"].decision == "reproduced")
