"""Plots the built-in scorers write as artifacts: ``output/artifacts/*.png``, sha256 in result.json.

matplotlib is imported lazily, on the first plot, with the non-interactive Agg backend set
explicitly (no display, no GUI toolkit, the same PNGs on every machine) and ``MPLCONFIGDIR``
pointed at a private temporary folder when the home folder cannot be written (a read-only
container), so importing a scorer has no side effect and a job with ``plots: false`` never loads
matplotlib. Each scorer's params model inherits :class:`PlotParams`, which adds the ``plots``
switch.
"""

from services.scorer.builtin.plots.figures import ARTIFACTS_DIR, PlotParams, Plotter

__all__ = ["ARTIFACTS_DIR", "PlotParams", "Plotter"]
