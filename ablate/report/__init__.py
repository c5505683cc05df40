"""Sweep comparison reports: ``generate_report(sweep_dir)`` reads a sweep directory and writes
report.md, a self-contained report.html and figures/*.png (ablate.tracking.sweep_reader → stats/effects →
plots → ablate.render)."""

__all__ = ["generate_report"]  # the command line is `ablate report` (ablate.cli)


def __getattr__(name: str):
    """``generate_report`` is imported on first use, so that importing one report module
    (aggregate, effects) does not pull in the builder's plotting (matplotlib)."""
    if name == "generate_report":
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
