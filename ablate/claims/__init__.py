"""``ablate.claims``: published claims stated as data and re-tested by ablate.

- ``spec``: the claim format (pydantic) and the search space's ``report:`` / ``claims:`` keys
  (pure validation; imported while a search space is validated, so nothing heavy here);
- ``evaluate``: per-claim comparisons via ``ablate.stats``, Holm over a family, four-way verdicts;
- ``sequential``: sequential seeds (``seeds: {min, max, batch}``) and the look history;
- ``values``: a metric's per-run value under an aggregation (also the report's metric tables);
- ``probe``: probe claims (an estimator tested at a fixed policy);
- ``sections``: the claims report sections. The ``ablate claims`` / ``ablate plan`` commands,
  which run sweeps, sit above the sweep in ``ablate.cli.claims`` / ``ablate.cli.plan``.
"""

from .spec import (AGGREGATIONS, CLAIM_KEYS, EXPECT, Claim, ReportSpec, check_metric_name, metric_terms,
                   parse_claims, parse_report)

__all__ = ["AGGREGATIONS", "CLAIM_KEYS", "EXPECT", "Claim", "ReportSpec", "check_metric_name",
           "metric_terms", "parse_claims", "parse_report"]
