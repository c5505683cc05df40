"""Report figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas (no pyplot
state, no display). Output is deterministic: fixed sizes and DPI, no timestamps in PNG metadata.
Heavy figures are bounded: curves and Pass@k for the top ``TOP_CURVES`` combinations only.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ablate.tracking.sweep_reader import Sweep

from .aggregate import Combo, Unit
from .effects import FactorEffect, Importances, Interaction

DPI = 100
TAB10 = colormaps["tab10"]
TOP_CURVES = 6
TOP_FOREST = 20
CURVE_METRICS = (
    ("eval/pass@1", "Pass@1"),
    ("train/entropy", "entropy"),
    ("train/grad_var", "gradient variance"),
    ("train/reward_mean", "reward"),
)


def _new(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, rect: tuple | None = None) -> bytes:
    """The figure laid out once with ``tight_layout`` inside ``rect`` (labels and titles inside the
    canvas; a legend outside the axes grows the figure first), as PNG bytes: saving needs no second
    layout pass (``bbox_inches="tight"`` would draw the whole figure twice)."""
    fig.tight_layout(rect=rect)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _combo_name(c: Combo, width: int = 60) -> str:
    """A legend entry that names the combination by its swept values (``C02 mask=none,
    train.epochs=4``), wrapped onto more lines rather than cut; the catalog look-alike stays in
    the leaderboard's footnote."""
    import textwrap

    what = c.desc if c.desc and c.desc != "(single combination)" else ""
    text = " ".join(x for x in (c.cid, what) if x)
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or c.cid


def _err(ci) -> tuple[float, float]:
    if not ci.has_ci:
        return 0.0, 0.0
    return max(0.0, ci.point - ci.lo), max(0.0, ci.hi - ci.point)


def _forest(ax: Axes, ivs: list, labels: list[str], **kw) -> np.ndarray:
    """One point with its interval bar per row, the first row at the top; returns the rows' y."""
    ys = np.arange(len(ivs))[::-1]
    if ivs:  # one errorbar artist for all rows (one per row costs ≈ 3 ms each to build and draw)
        err = np.array([_err(iv) for iv in ivs], dtype=float).T
        ax.errorbar([iv.point for iv in ivs], ys, xerr=err, capsize=3, **kw)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return ys


def _heatmap(ax: Axes, m: np.ndarray, ticks: tuple[list, list, int, dict], fmt: str, white, **imshow) -> None:
    """``m`` as an image with a colour bar and each finite value written in its cell (white text
    where ``white(v)``); ``ticks``: column labels, row labels, their font size, extra x-tick options."""
    im = ax.imshow(m, **imshow)
    cols, rows, size, xopts = ticks
    ax.set_xticks(range(len(cols)), cols, fontsize=size, **xopts)
    ax.set_yticks(range(len(rows)), rows, fontsize=size)
    for (r, c), v in np.ndenumerate(m):
        if np.isfinite(v):
            ax.text(c, r, f"{v:{fmt}}", ha="center", va="center", fontsize=7, color="white" if white(v) else "black")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def leaderboard_plot(combos: list[Combo], metric: str) -> bytes | None:
    head = combos[:TOP_FOREST]
    if not head:
        return None
    fig = _new(8.5, 1.2 + 0.32 * len(head))
    ax = fig.add_subplot(1, 1, 1)
    ys = _forest(ax, [c.target for c in head], [_combo_name(c) for c in head], fmt="o", color="C0", zorder=3)
    xs = np.concatenate([np.asarray(c.values, dtype=float) for c in head])
    ax.scatter(xs, np.repeat(ys, [len(c.values) for c in head]), s=12, color="0.45", zorder=2, marker="|")
    ax.set(xlabel=f"{metric} (mean over seeds, 95% t interval; ticks = seeds)",
           title=f"Top {len(head)} combinations")
    return _png(fig)


def marginals_plot(effects: list[FactorEffect], metric: str) -> bytes | None:
    if not effects:
        return None
    ncols = min(3, len(effects))
    nrows = int(np.ceil(len(effects) / ncols))
    maxlev = max(len(e.levels) for e in effects)
    fig = _new(4.0 * ncols, nrows * (1.3 + 0.34 * maxlev))
    # one x-range for all panels so that effect sizes compare across factors
    x_lo = min(min(lv.ci.lo if lv.ci.has_ci else lv.ci.point for lv in e.levels) for e in effects)
    x_hi = max(max(lv.ci.hi if lv.ci.has_ci else lv.ci.point for lv in e.levels) for e in effects)
    pad = 0.05 * (x_hi - x_lo) if x_hi > x_lo else 0.01
    for i, eff in enumerate(effects):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _forest(ax, [lv.ci for lv in eff.levels], [lv.label for lv in eff.levels], fmt="o",
                color="C1" if eff.kind == "param" else "C0")
        ax.set_title(eff.name, fontsize=9)
        if np.isfinite(x_lo) and np.isfinite(x_hi):
            ax.set_xlim(x_lo - pad, x_hi + pad)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"Marginal mean of {metric} per variant (95% CI; shared x-axis)", fontsize=10)
    return _png(fig)


def interactions_plot(inters: list[Interaction], metric: str, top: int = 3) -> bytes | None:
    head = inters[:top]
    if not head:
        return None
    fig = _new(4.6 * len(head), 3.9)
    vmin = min(float(np.nanmin(it.means)) for it in head)
    vmax = max(float(np.nanmax(it.means)) for it in head)
    for i, it in enumerate(head):
        ax = fig.add_subplot(1, len(head), i + 1)
        ax.set_xlabel(it.b, fontsize=8)
        ax.set_ylabel(it.a, fontsize=8)
        ax.set_title(f"{it.a} × {it.b} (resid. RMS {it.residual_rms:.3g})", fontsize=8)
        _heatmap(ax, it.means, (it.cols, it.rows, 7, {"rotation": 30, "ha": "right"}), ".3f",
                 lambda v: not v > (vmin + vmax) / 2, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    fig.suptitle(f"Cell means of {metric}", fontsize=10)
    return _png(fig)


def importance_plot(imp: Importances) -> bytes | None:
    if not imp.available:
        return None
    names = imp.names
    fig = _new(7.5, 1.2 + 0.45 * len(names))
    ax = fig.add_subplot(1, 1, 1)
    ys = np.arange(len(names))[::-1]
    h = 0.38
    for res, off, label, color in ((imp.fanova, h / 2, "fANOVA", "C0"), (imp.ped_anova, -h / 2, "PED-ANOVA", "C2")):
        if res:
            ax.barh(ys + off, [res.get(n, 0.0) for n in names], height=h, label=label, color=color)
    ax.set_yticks(ys, names, fontsize=8)
    ax.set(xlim=(0, 1), xlabel="normalised importance")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Importance ({imp.n_trials} {imp.unit})", fontsize=10)
    return _png(fig)


def robust_plot(units: list[Unit], ids: list[str], poi: np.ndarray, metric: str) -> bytes | None:
    head = units[:TOP_FOREST]
    if not head:
        return None
    has_poi = len(ids) >= 2
    fig = _new(12.5 if has_poi else 7.0, max(3.4, 1.2 + 0.3 * len(head)))
    ax = fig.add_subplot(1, 2 if has_poi else 1, 1)
    _forest(ax, [u.iqm for u in head], [u.uid for u in head], fmt="s", color="C3")
    ax.set_xlabel(f"IQM of {metric} (95% BCa interval from 20 runs, else the point)", fontsize=8)
    ax.set_title("Interquartile mean", fontsize=10)
    if has_poi:
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.set(xlabel="Y", ylabel="X")
        ax2.set_title("P(X better than Y)", fontsize=10)
        _heatmap(ax2, poi, (ids, ids, 8, {}), ".2f", lambda v: abs(v - 0.5) > 0.3, cmap="RdBu", vmin=0, vmax=1)
    return _png(fig)


def _curve_table(sweep: Sweep, combos: list[Combo], metric: str) -> pd.DataFrame:
    """Per combination and step: mean over seeds and its standard error (0 for one seed)."""
    m = sweep.metrics
    if metric not in m.columns:
        return pd.DataFrame(columns=["cid", "step", "mean", "se"])
    owner = {tid: c.cid for c in combos for tid in c.trial_ids}
    d = m.loc[m["trial_id"].isin(list(owner)), ["trial_id", "step", metric]].dropna()
    d = d.assign(cid=d["trial_id"].map(owner))
    g = d.groupby(["cid", "step"], sort=True)[metric]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.size()}).reset_index()
    out["se"] = (out["sd"] / np.sqrt(out["n"])).fillna(0.0)
    return out


def curves_plot(sweep: Sweep, combos: list[Combo]) -> bytes | None:
    head = combos[:TOP_CURVES]
    if not head or sweep.metrics.empty:
        return None
    fig = _new(11.0, 7.2)
    colors = {c.cid: TAB10(i % 10) for i, c in enumerate(head)}
    names = {c.cid: _combo_name(c) for c in head}
    drawn = False
    panels = list(CURVE_METRICS)
    if sweep.metric != panels[0][0] and sweep.metric in sweep.metrics.columns:
        panels[0] = (sweep.metric, "target")
    for i, (metric, title) in enumerate(panels):
        ax = fig.add_subplot(2, 2, i + 1)
        tab = _curve_table(sweep, head, metric)
        if tab.empty:
            ax.text(0.5, 0.5, f"{metric} not logged", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="0.4")
        for cid, part in tab.groupby("cid", sort=True):  # ids sort as ranked
            x, y, se = (part[col].to_numpy(float) for col in ("step", "mean", "se"))
            ax.plot(x, y, color=colors[cid], lw=1.4, label=names[cid],
                    marker="o" if len(x) <= 12 else None, ms=3)
            ax.fill_between(x, y - se, y + se, color=colors[cid], alpha=0.18, lw=0)
            drawn = True
        ax.set_title(f"{title} ({metric})", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if metric == "train/grad_var" and not tab.empty and (tab["mean"] > 0).all():
            ax.set_yscale("log")
    if not drawn:
        return None
    handles, labels = next(hl for hl in map(Axes.get_legend_handles_labels, fig.axes) if hl[0])
    fig.suptitle(f"Training curves, top {len(head)} combinations (mean over seeds ± 1 s.e.)", fontsize=10)
    # below the panels, as wide as the names need: the figure grows by the legend's height
    widest = max(len(x) for lab in labels for x in lab.splitlines())
    leg = fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0),
                     ncol=max(1, min(3, len(labels), 110 // max(widest, 1))), fontsize=8, frameon=False)
    w, h = fig.get_size_inches()
    leg_h = leg.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi + 0.1
    fig.set_size_inches(w, h + leg_h)
    return _png(fig, (0, leg_h / (h + leg_h), 1, 0.97))


def passk_plot(combos: list[Combo], ks: list[int]) -> bytes | None:
    head = [c for c in combos[:TOP_CURVES] if c.pass_k]
    if not head or len(ks) < 2:
        return None
    fig = _new(7.5, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    for i, c in enumerate(head):
        kk = [k for k in ks if k in c.pass_k and np.isfinite(c.pass_k[k].point)]
        y = np.array([c.pass_k[k].point for k in kk])
        err = np.array([_err(c.pass_k[k]) for k in kk]).reshape(-1, 2).T
        ax.errorbar(kk, y, yerr=err, marker="o", ms=4, capsize=3, color=TAB10(i % 10), label=_combo_name(c))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="k", ylabel="Pass@k at the final evaluation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Pass@k vs k (mean over seeds, 95% t interval)", fontsize=10)
    return _png(fig)
