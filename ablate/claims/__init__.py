"""``ablate.claims``: published claims stated as data and re-tested by ablate.

- ``spec``: the claim format (pydantic) and the search space's ``report:`` / ``claims:`` keys
  (pure validation; imported while a search space is validated, so nothing heavy here);
- ``evaluate``: per-claim comparisons via ``ablate.stats``, Holm over a family, four-way verdicts;
- ``sequential``: sequential seeds (``seeds: {min, max, batch}``) and the look history;
- ``sections``: the claims report sections; ``run``: the ``ablate claims`` command.
"""

from .spec import (AGGREGATIONS, CLAIM_KEYS, EXPECT, Claim, ReportSpec, check_metric_name, metric_terms,
                   parse_claims, parse_report)

__all__ = ["AGGREGATIONS", "CLAIM_KEYS", "EXPECT", "Claim", "ReportSpec", "check_metric_name",
           "metric_terms", "parse_claims", "parse_report"]
