"""The one style table of the project's figures, and the save path.

Every figure draws a loss in the same colour and marker (:func:`loss_style`), whatever else the
figure shows, so that CE, LDT, CDT, ... can be recognized across a paper's figures. Norm ratios
are squared everywhere (``||x_c||^2 / ||x_ref||^2``, the convention of the field's papers) and
simplex-ETF references are drawn with :data:`ETF_LINE`. :func:`save_figure` writes PNG and PDF
with TrueType (Type 42) fonts, which venues that reject Type 3 fonts accept.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from ..files import WRITER, check_output, figure_pair, figure_path, write_output

#: Colour and marker of each loss (colour-blind safe Okabe-Ito colours). Keys are the loss
#: presets of :data:`ucfm_svm.spec.LOSSES` plus ``custom``.
LOSS_STYLES: dict[str, dict[str, str]] = {
    "ce": {"color": "#000000", "marker": "o"},
    "wce": {"color": "#999999", "marker": "x"},
    "la": {"color": "#56B4E9", "marker": "v"},
    "ldam": {"color": "#F0E442", "marker": "P"},
    "cdt": {"color": "#D55E00", "marker": "s"},
    "ldt": {"color": "#0072B2", "marker": "^"},
    "vs": {"color": "#009E73", "marker": "D"},
    "custom": {"color": "#CC79A7", "marker": "*"},
}
#: Simplex-ETF reference lines (cosine ``-1/(k-1)``, equal norms).
ETF_LINE = {"color": "0.45", "lw": 0.9, "ls": ":"}
#: Lines that separate groups of classes (many / medium / few).
GROUP_LINE = {"color": "0.3", "lw": 0.8, "ls": "--"}
#: Diverging colour map of cosine heatmaps (one shared scale, ``[-1, 1]``).
COSINE_CMAP = "RdBu_r"
#: rc settings of every saved figure: TrueType fonts in PDF and PS.
SAVE_RC = {"pdf.fonttype": 42, "ps.fonttype": 42}
DPI = 150


def loss_style(loss: str) -> dict[str, str]:
    """``{"color", "marker"}`` of ``loss`` (a preset name, case-insensitive)."""
    return dict(LOSS_STYLES.get(loss.lower(), LOSS_STYLES["custom"]))


@contextlib.contextmanager
def _quiet_font_tools() -> Iterator[None]:
    """fontTools, which subsets the TrueType fonts embedded in PDF/PS, logs warnings about
    harmless font details ("'modified' timestamp seems very low") straight to stderr; they
    are noise on a command's output, so its logger keeps only errors while a figure is saved."""
    logger = logging.getLogger("fontTools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _metadata(fmt: str) -> dict[str, str]:
    """The mark of our outputs (:data:`ucfm_svm.files.WRITER`) in ``fmt``'s metadata."""
    return {"Software" if fmt == "png" else "Creator": WRITER}


def save_figure(fig: Figure, stem: str | Path, dpi: int = DPI) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` (:func:`ucfm_svm.files.figure_pair`) under
    :data:`SAVE_RC`, each by :func:`ucfm_svm.files.write_output` (refused over a file ucfm-svm
    did not write, both checked before either is written; folders created; atomic); returns
    the paths."""
    png, pdf = figure_pair(stem)
    for path in (png, pdf):  # both refused before either is drawn or written
        check_output(path)
    # Lay out and rasterize once: the PNG is written from the Agg canvas's pixels, and the PDF
    # is rendered with the layout engine off, reusing the positions of that draw (two savefig
    # calls would run the layout and the full draw twice; benchmarks/bench_reproduce.py).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    with mpl.rc_context(SAVE_RC), _quiet_font_tools():
        fig.set_dpi(dpi)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        info = PngInfo()
        for key, value in _metadata("png").items():
            info.add_text(key, value)
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(canvas.buffer_rgba())).save(
            buffer, format="png", dpi=(dpi, dpi), pnginfo=info
        )
        write_output(png, buffer.getvalue())
        fig.set_layout_engine("none")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="pdf", metadata=_metadata("pdf"))
        write_output(pdf, buffer.getvalue())
    return [png, pdf]


def save_one(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` to the single file :func:`figure_path` of ``path`` (format from its suffix)
    under :data:`SAVE_RC`, by :func:`ucfm_svm.files.write_output`; returns that file."""
    path = figure_path(path)
    fmt = path.suffix.lower().lstrip(".")
    buffer = io.BytesIO()
    with mpl.rc_context(SAVE_RC), _quiet_font_tools():
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=_metadata(fmt))
    write_output(path, buffer.getvalue())
    return path
