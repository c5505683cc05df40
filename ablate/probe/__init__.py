"""Counterfactual estimator probe: estimators' gradients at a fixed policy on shared batches
(``ablate probe``; ``probe_estimators`` for the claims package). See ablate/probe/estimators.py."""

from ablate.probe.estimators import ArmStats, ProbeResult, probe_estimators, summarize

__all__ = ["ArmStats", "ProbeResult", "probe_estimators", "summarize"]
