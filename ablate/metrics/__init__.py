"""Run metrics with exact definitions (DESIGN §4): unbiased Pass@k, token entropy independent of
the aggregation mode, gradient variance / norm / SNR from accumulation microbatches. Clip and
mask fractions come from the estimator (ablate/upge/estimator.py)."""

from ablate.metrics.entropy import token_entropy_mean, token_entropy_sum_count
from ablate.metrics.gradvar import GradVarianceMeter
from ablate.metrics.passk import k_grid, pass_at_k, pass_at_k_metrics, pass_at_k_per_prompt

__all__ = ["pass_at_k", "pass_at_k_metrics", "pass_at_k_per_prompt", "k_grid",
           "token_entropy_mean", "token_entropy_sum_count", "GradVarianceMeter"]
