"""The shared part: the lazy matplotlib import, the ``plots`` param, and figure -> artifact."""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from shared.files import atomic_write_bytes, make_artifact
from shared.models import Artifact
from shared.workspace import Workspace

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ARTIFACTS_DIR = "output/artifacts"
DPI = 100
MARGINS = (0.9, 0.7, 0.3, 0.6)
RC = {"text.parse_math": False, "text.usetex": False, "axes.titlesize": 10}
"""Labels are data (participants' and organisers' strings): never read ``$...$`` as mathtext."""
log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_PYPLOT: list[ModuleType] = []


class PlotParams(BaseModel):
    """The switch every built-in scorer with plots takes (its params model inherits it)."""

    plots: bool = Field(
        True, description=f"write PNG plots to {ARTIFACTS_DIR}/ (listed in result.json)"
    )


def _config_dir() -> None:
    """matplotlib writes a font cache under ``MPLCONFIGDIR`` (default ``~/.config/matplotlib``):
    point it at a private temporary folder when that is not writable."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    home = Path(os.path.expanduser("~"))
    target = home / ".config" / "matplotlib"
    probe = target if target.exists() else home
    if not os.access(probe, os.W_OK):
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="autoscorer-mpl-")


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend, imported on first use."""
    with _LOCK:
        if not _PYPLOT:
            _config_dir()
            import matplotlib

            matplotlib.use("Agg", force=True)
            import matplotlib.pyplot as plt

            _PYPLOT.append(plt)
        return _PYPLOT[0]


def _artifacts_folder(ws: Workspace) -> Path:
    """``output/artifacts/``, made a real folder: a link left there by participant code (which
    writes output/) is removed, never followed."""
    folder = ws.root / ARTIFACTS_DIR
    if folder.is_symlink():
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Plotter:
    """Writes figures of one workspace to ``output/artifacts/<name>.png`` and collects them."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.folder = _artifacts_folder(ws)
        self.plt = pyplot()
        self.artifacts: dict[str, Artifact] = {}
        self.started = time.perf_counter()

    def figure(
        self, width: float, height: float, margins: tuple[float, float, float, float] = MARGINS
    ) -> Figure:
        """A figure of ``width`` x ``height`` inches whose subplots leave ``margins`` (left,
        bottom, right, top, in inches) for labels. Fixed margins, not a layout engine: a layout
        engine draws every figure twice, which doubled the plots' cost."""
        figure: Figure = self.plt.figure(figsize=(width, height), dpi=DPI)
        left, bottom, right, top = margins
        figure.subplots_adjust(
            left=left / width,
            bottom=bottom / height,
            right=1 - right / width,
            top=1 - top / height,
            wspace=0.3,
        )
        return figure

    def save(self, figure: Figure, name: str, description: str) -> None:
        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format="png", dpi=DPI)
        finally:
            self.plt.close(figure)
        path = self.folder / f"{name}.png"
        atomic_write_bytes(path, buffer.getvalue())
        self.artifacts[name] = make_artifact(
            self.ws.root, path, media_type="image/png", description=description
        )

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def draw(ws: Workspace, plot: Callable[[Plotter], None]) -> dict[str, Artifact]:
    """Run ``plot`` and return the artifacts it saved. A plot is an illustration of the score,
    not part of it: if drawing fails (a matplotlib bug, a full disk) the failure is logged and
    the score stands with the plots saved so far. Labels missing from the font are drawn as
    boxes, without a warning per glyph."""
    plotter = Plotter(ws)
    try:
        with warnings.catch_warnings(), plotter.plt.rc_context(RC):
            warnings.filterwarnings("ignore", "Glyph .* missing from", UserWarning)
            plot(plotter)
    except Exception:  # the plots' boundary, see the docstring
        log.warning("plots for %s stopped", ws.root, exc_info=True)
        plotter.plt.close("all")
    return plotter.artifacts
