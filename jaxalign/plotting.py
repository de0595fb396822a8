"""One plotting style for every figure ``jaxalign reproduce`` writes.

:func:`jaxalign.experiment.reproduce` runs each experiment inside :func:`style`, so a
new figure inherits the fonts, the colour-blind-safe :data:`PALETTE` and the grid
without doing anything. The helpers below cover what the figures kept getting wrong:

* :func:`figure` / :func:`panel_grid` make figures with the *constrained* layout, so a
  ``suptitle`` never overlaps the panel titles and outside legends get their room
  (never call ``fig.tight_layout()`` on them);
* :func:`reference_line` draws slope guides and levels *under* the data (low zorder,
  grey, thin), so a curve lying on its reference stays visible;
* :func:`band` draws a quantile band under its curve and :func:`band_key` adds the
  legend entry that says what the bands are;
* :func:`legend` places a legend where it hides least data: ``loc="best"`` inside the
  axes, or outside on the right (``outside=True``) when the axes are full;
* labels with sub- or superscripts are written in mathtext (``r"$\\pi_{t+1}$"``);
  :func:`raw_tex` and :func:`overlapping_titles` find the figures that forgot, and
  ``reproduce`` warns about them.

Example::

    from jaxalign import plotting

    fig, (ax,) = plotting.figure(1, 1, suptitle="ONPO vs OMD")
    (line,) = ax.loglog(t, gap_mean, label="ONPO")
    plotting.band(ax, t, q10, q90, color=line.get_color())
    plotting.reference_line(ax, t, 3 * gap_mean[0] / t, label="slope $-1$")
    plotting.legend(ax)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: Okabe–Ito colours (distinguishable with the common colour-vision deficiencies), then
#: two neutral extras; the default colour cycle of every styled figure.
PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#8C564B",  # brown
    "#000000",  # black
    "#7F7F7F",  # grey
)
#: Colour of reference lines (slope guides, bounds, levels): never a data colour.
REFERENCE_COLOR = "0.45"
#: zorders: grid and bands under reference lines under data lines under markers.
Z_BAND, Z_REFERENCE, Z_DATA = 1.0, 1.5, 2.0

RC: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 130,
    "font.size": 9.5,
    "axes.titlesize": 10,
    "axes.labelsize": 9.5,
    "figure.titlesize": 11.5,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
    "legend.edgecolor": "0.8",
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.formatter.use_mathtext": True,
    "mathtext.fontset": "dejavusans",
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "image.cmap": "viridis",
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Context in which new figures use the shared style (:data:`RC`, :data:`PALETTE`)."""
    import matplotlib as mpl
    from cycler import cycler

    with mpl.rc_context({**RC, "axes.prop_cycle": cycler(color=PALETTE)}):
        yield


def figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    panel_size: tuple[float, float] = (4.6, 3.6),
    suptitle: str | None = None,
    **subplot_kw: Any,
):
    """A figure of ``nrows × ncols`` panels with the constrained layout.

    Args:
      nrows, ncols: the panel grid.
      panel_size: (width, height) in inches of one panel; the figure is that times the grid.
      suptitle: the figure title (placed above the panel titles by the layout).
      **subplot_kw: passed to ``plt.subplots`` (``sharey=True``, ``gridspec_kw=…``).

    Returns:
      ``(fig, axes)`` with ``axes`` a flat list of the ``nrows * ncols`` panels.
    """
    import matplotlib.pyplot as plt

    size = (panel_size[0] * ncols, panel_size[1] * nrows)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=size, layout="constrained", squeeze=False, **subplot_kw
    )
    if suptitle:
        fig.suptitle(suptitle)
    return fig, list(axes.ravel())


def panel_grid(
    num_panels: int,
    *,
    max_cols: int = 3,
    panel_size: tuple[float, float] = (4.6, 3.6),
    suptitle: str | None = None,
    **subplot_kw: Any,
):
    """``num_panels`` panels in rows of at most ``max_cols``; unused cells are removed.

    Returns:
      ``(fig, axes)`` with exactly ``num_panels`` axes.
    """
    if num_panels < 1:
        raise ValueError(f"num_panels must be >= 1, got {num_panels}")
    cols = min(max_cols, num_panels)
    rows = -(-num_panels // cols)
    fig, axes = figure(rows, cols, panel_size=panel_size, suptitle=suptitle, **subplot_kw)
    for ax in axes[num_panels:]:
        fig.delaxes(ax)
    return fig, axes[:num_panels]


def reference_line(
    ax,
    x: Sequence[float] | np.ndarray | None = None,
    y: Sequence[float] | np.ndarray | float | None = None,
    *,
    label: str | None = None,
    ls: str = "--",
    horizontal: bool = False,
    **kw: Any,
):
    """A guide (slope, bound, level) drawn in grey *under* the data.

    ``reference_line(ax, x, y)`` draws the curve ``y(x)``; ``reference_line(ax, y=v,
    horizontal=True)`` a horizontal level at ``v``. Keyword arguments override the style.
    """
    style = {"color": REFERENCE_COLOR, "lw": 1.0, "ls": ls, "zorder": Z_REFERENCE, **kw}
    if horizontal:
        return ax.axhline(y, label=label, **style)
    return ax.plot(x, y, label=label, **style)[0]


def band(ax, x, lo, hi, *, color, label: str | None = None, alpha: float = 0.15):
    """A shaded band (e.g. the 10–90 % quantiles across seeds) under its curve."""
    return ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0, zorder=Z_BAND, label=label)


def band_key(ax, label: str, *, alpha: float = 0.3):
    """A neutral legend swatch saying what the shaded bands of ``ax`` are; draws nothing."""
    return ax.fill_between([], [], [], color=REFERENCE_COLOR, alpha=alpha, lw=0, label=label)


def legend(ax, *, outside: bool = False, **kw: Any):
    """The axes' legend where it hides least: ``loc="best"`` inside, or outside on the right.

    With ``outside=True`` the legend sits right of the axes; the constrained layout of
    :func:`figure` makes room for it.
    """
    if outside:
        kw = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0, **kw}
    else:
        kw = {"loc": "best", **kw}
    return ax.legend(**kw)


def figure_legend(fig, axes=None, *, loc: str = "outside lower center", ncols: int = 4, **kw):
    """One legend for the whole figure (entries deduplicated by label), outside the panels.

    ``loc`` takes the constrained layout's ``"outside …"`` positions.
    """
    seen: dict[str, Any] = {}
    for ax in axes if axes is not None else fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                seen.setdefault(label, handle)
    return fig.legend(list(seen.values()), list(seen), loc=loc, ncols=ncols, **kw)


def expand_to(ax, value: float, *, axis: str = "y", pad: float = 0.06) -> None:
    """Widens the axis limits so a level at ``value`` lies inside, not on the border."""
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    log = (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log"
    f = np.log10 if log else (lambda v: v)
    g = (lambda v: 10**v) if log else (lambda v: v)
    a, b, v = f(lo), f(hi), f(value)
    span = max(b, v) - min(a, v)
    new = (g(min(a, v - pad * span)), g(max(b, v + pad * span)))
    (ax.set_ylim if axis == "y" else ax.set_xlim)(*new)


# --------------------------------------------------------------------------- checks

# Sub/superscripts and commands that only mathtext renders: `π_{t+1}`, `e^{r/β}`, `R^10`.
_TEX = re.compile(r"[_^]\{|\^\S|\\[A-Za-z]+")
_MATH = re.compile(r"(?<!\\)\$.*?(?<!\\)\$")


def _texts(fig) -> list:
    out = [fig._suptitle] if getattr(fig, "_suptitle", None) is not None else []
    for ax in fig.axes:
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        out += list(ax.texts)
        leg = ax.get_legend()
        if leg is not None:
            out += list(leg.get_texts())
    for leg in fig.legends:
        out += list(leg.get_texts())
    return [t for t in out if t is not None and t.get_text()]


def raw_tex(fig) -> list[str]:
    """Texts of ``fig`` with TeX markup outside ``$…$``, which matplotlib prints verbatim."""
    bad = []
    for t in _texts(fig):
        s = t.get_text()
        if _TEX.search(_MATH.sub("", s)):
            bad.append(s)
    return bad


def overlapping_titles(fig) -> list[tuple[str, str]]:
    """Pairs of overlapping title texts (the suptitle and the panel titles) after a draw."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    titles = [fig._suptitle] if getattr(fig, "_suptitle", None) is not None else []
    titles += [ax.title for ax in fig.axes if ax.get_visible() and ax.title.get_text()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in titles]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def problems(fig) -> list[str]:
    """Every defect the checks find, one line each (empty when the figure is clean)."""
    out = [f"raw TeX shown as text: {s!r}" for s in raw_tex(fig)]
    out += [f"titles overlap: {a!r} / {b!r}" for a, b in overlapping_titles(fig)]
    return out


__all__ = [
    "PALETTE",
    "RC",
    "REFERENCE_COLOR",
    "band",
    "band_key",
    "expand_to",
    "figure",
    "figure_legend",
    "legend",
    "overlapping_titles",
    "panel_grid",
    "problems",
    "raw_tex",
    "reference_line",
    "style",
]
