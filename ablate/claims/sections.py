"""The claims report sections (a sweep report's "Claims", and the combined claims report) as
blocks of the report's document model."""

from __future__ import annotations

import numpy as np

from ablate.render import Code, Details, Heading, Para, Strong, Table
from ablate.stats import ALPHA

from .evaluate import ClaimResult, agg_words, arm_text

VERDICT_MARK = {"reproduced": "reproduced", "contradicted": "CONTRADICTED", "equivalent": "equivalent",
                "underpowered": "underpowered", "inconclusive": "inconclusive", "untestable": "untestable",
                "misspecified": "misspecified"}


def _g(x: float, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:+.4g}" if signed else f"{x:.3g}"


def diff_text(r: ClaimResult) -> str:
    k = r.comparison
    if not np.isfinite(k.estimate):
        return "n/a"
    if not np.isfinite(k.low):
        return f"{_g(k.estimate, True)} (no CI, n={r.n_seeds})"
    return f"{_g(k.estimate, True)} [{_g(k.low, True)}, {_g(k.high, True)}]"


def claims_table(results: list[ClaimResult], with_sweep: bool = False) -> Table:
    header = ["claim", "paper", "metric", "a", "b", "expect a", "a − b [95% CI]", "p (Holm)", "MDE",
              "seeds (probe: batches)", "verdict"]
    if with_sweep:
        header.insert(1, "sweep")
    rows = []
    for r in results:
        c, k = r.claim, r.comparison
        how = f"probe, {c.batches} batches" if c.is_probe else c.aggregation
        row = [[Code(c.id)], f"{c.paper} (arXiv {c.arxiv})", f"{c.metric}, {how}",
               arm_text(c.a), arm_text(c.b), c.expect, diff_text(r),
               f"{_g(k.p_value)} ({_g(k.p_adjusted)})", _g(k.mde), f"{k.n_a}/{k.n_b}",
               [Strong(VERDICT_MARK[r.verdict])]]
        if with_sweep:
            row.insert(1, r.sweep)
        rows.append(row)
    return Table(header, rows, ["l"] * len(header))


METHODS_TEXT = (
    "a − b is the difference of the arms' per-run values (the claim's aggregation), per seed the "
    "mean over the arm's combinations; arms share seeds, so the test is a paired t over the shared "
    "seeds (Welch t when none are shared) with a 95% t interval. p-values are Holm-corrected over "
    "the {n} tested claim(s) of this family (misspecified claims and claims of sequential sweeps "
    "are left out). Verdict: "
    "reproduced / contradicted when the adjusted p < {alpha:g} and a − b lies on the expected / other "
    "side; equivalent when two one-sided tests (TOST, Holm-corrected) place a − b within the "
    "declared ±margin; underpowered when the minimum detectable effect (MDE: the difference this "
    "design detects with 80% power at this n and variance) exceeds the declared effect of "
    "interest; inconclusive otherwise; misspecified when the claim's sweep cannot test it. "
    "Seeds column: seeds with values in arm a / arm b. Sweeps with sequential seeds "
    "(seeds: {{min, max}}) are their own family: each look tests the undecided claims against "
    "O'Brien–Fleming-type alpha-spending boundaries (Holm by recycling the spent alpha), stops a "
    "claim when it is reproduced / contradicted or its repeated CI lies within ±margin, and every "
    "look is listed under the claim (their p (Holm) reads n/a). Probe claims (claims about an estimator) are measured at a "
    "fixed policy with the counterfactual estimator probe: both arms' gradients on the same rollout "
    "batches, a − b is a paired t over the batches (per batch: the leave-one-out squared deviation of "
    "the gradient, whose mean is the trace of its covariance), and they join the Holm family."
)


def claim_blocks(results: list[ClaimResult], heading: bool = True, with_sweep: bool = False) -> list:
    blocks: list = [Heading(2, "Claims", "claims")] if heading else []
    n = sum(1 for r in results if not r.claim.misspecified and not r.looks)
    blocks.append(Para("Published claims re-tested on " + ("these sweeps" if with_sweep else "this sweep")
                       + ". " + METHODS_TEXT.format(n=n, alpha=ALPHA)))
    blocks.append(claims_table(results, with_sweep))
    for r in results:
        c = r.claim
        blocks.append(Para([Strong(c.id), f" — {c.claim} ({c.paper}, arXiv {c.arxiv}). ",
                            f"Verdict: {r.verdict}. {r.sentence} ",
                            f"Arm means ({agg_words(c)}): a = {r.mean_a:.4g}, b = {r.mean_b:.4g}."]
                           + (_effect_text(r))))
        if r.looks:
            blocks.append(look_table(r))
        if c.notes:
            blocks.append(Details(f"Notes on {c.id}", [Para(c.notes)]))
    return blocks


def _effect_text(r: ClaimResult) -> list:
    g = r.comparison.hedges_g
    parts = []
    if g is not None and np.isfinite(g.point):
        ci = f" [{g.lo:+.2f}, {g.hi:+.2f}]" if g.has_ci else ""
        parts.append(f" Hedges' g = {g.point:+.2f}{ci}.")
    if r.claim.effect is not None:
        parts.append(f" Effect of interest: {r.claim.effect:g}.")
    if r.claim.margin is not None:
        parts.append(f" Equivalence margin: ±{r.claim.margin:g}.")
    return parts


def look_table(r: ClaimResult) -> Details:
    """Every sequential look at the claim: seeds, the look's nominal level (alpha spending), the
    repeated confidence interval and what was decided."""
    rows = [[str(lk.n), f"{lk.level:.4g}", _g(lk.estimate, True),
             f"[{_g(lk.low, True)}, {_g(lk.high, True)}]", _g(lk.p_value), lk.decision] for lk in r.looks]
    return Details(f"Sequential looks at {r.claim.id} ({len(r.looks)})", [Table(
        ["seeds", "nominal level", "a − b", "repeated CI", "p", "decision"], rows,
        ["r", "r", "r", "r", "r", "l"])])
