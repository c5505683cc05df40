"""``ablate.stats``: the single owner of inference in ablate (intervals, p-values, verdicts, power,
multiplicity, factorial models, sequential seeds, effect sizes). Built on scipy.stats and
statsmodels; calibrated at the sizes ablate runs (3–10 seeds), see tests/stats and bench/calibration.py.

Public API: ``compare`` → ``Comparison``; ``adjust`` / ``adjust_p`` (Holm, BH); ``mde``, ``power``,
``seeds_needed``; ``mean_ci``, ``location_ci``, ``Interval``; ``hedges_g``; ``CellModel``
(factorial linear model); ``SequentialPlan``, ``boundaries``; ``auc``, ``last_k_mean``.
``ablate.stats.prompts``: pass@k with seeds as replicates and prompts as a crossed effect.
"""

from .curves import auc, last_k_mean
from .compare import METHODS, VERDICTS, Comparison, compare, decide, hedges_g, paired_t, welch_t
from .interval import MIN_BOOTSTRAP, Interval, iqm, location_ci, mean_ci, probability_of_improvement
from .multiplicity import adjust, adjust_p, rejects
from .power import ALPHA, POWER, mde, paired_sd, power, seeds_needed
from .linear import CellModel
from .sequential import SequentialPlan, boundaries, looks, nominal_levels

__all__ = ["ALPHA", "METHODS", "MIN_BOOTSTRAP", "POWER", "VERDICTS", "Comparison", "Interval", "SequentialPlan",
           "CellModel", "adjust", "adjust_p", "auc", "boundaries", "compare", "decide", "hedges_g", "iqm", "location_ci",
           "last_k_mean", "looks", "mde", "mean_ci", "nominal_levels", "paired_sd", "paired_t", "power",
           "probability_of_improvement", "rejects", "seeds_needed", "welch_t"]
