"""Figures of a study: metric sweeps, grouped bars, communication curves and density contours."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgmm._extras import install_hint

try:
    import matplotlib
except ImportError as exc:
    raise ImportError(f"fedgmm's plots and study reports need matplotlib: {install_hint('matplotlib')}") from exc

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    EngFormatter,
    FixedLocator,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

from fedgmm.em.stats import score_samples
from fedgmm.mixture import MixtureState

DPI = 150
LOGLIK_LABEL = "test log-likelihood (nats/sample)"
BYTES_LABEL = "bytes (client→server + server→client)"

_RC: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 13,
    "axes.grid": True,
    "grid.alpha": 0.3,
}

# Canonical order, colour and marker of each method; further labels of one method get
# the next marker and a lighter or darker shade of the method's colour.
_METHOD_STYLES: dict[str, tuple[str, str]] = {
    "centralized": ("#000000", "s"),
    "fedem": ("#1f77b4", "o"),
    "fedgengmm": ("#d62728", "D"),
    "hybrid": ("#9467bd", "^"),
    "union": ("#2ca02c", "p"),
    "local": ("#ff7f0e", "X"),
}
_EXTRA_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_EXTRA_MARKERS = ("P", "h", "<", ">", "p", "*", "d")
_CLIENT_CMAP = "tab10"


@dataclass(frozen=True)
class Style:
    """How one method label is drawn: colour and marker."""

    color: str
    marker: str


@dataclass
class Series:
    """One method's mean ± std of a metric at some x positions.

    Attributes
    ----------
    label : str
        Method label (key into the style map).
    x : ndarray of shape (m,)
        Positions (values, or category indices for a categorical axis).
    mean, std : ndarray of shape (m,)
        Mean and standard deviation over seeds (NaN where unknown).
    """

    label: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray


@dataclass
class Panel:
    """One axes of a sweep figure: lines of methods that vary, reference levels of those that do not.

    Attributes
    ----------
    title, ylabel : str
    series : list of Series
        Drawn as lines with error bars.
    references : list of Series
        Single-valued (``mean[0] ± std[0]``): drawn as horizontal dashed lines with a band.
    """

    title: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    references: list[Series] = field(default_factory=list)


@dataclass
class BarPanel:
    """One axes of grouped bars: categories along x, one bar per method in each.

    Attributes
    ----------
    title, ylabel : str
    categories : list of str
        Tick labels of the groups.
    bars : list of Series
        ``x`` indexes ``categories``; NaN means no bar.
    reference : ndarray of shape (len(categories),) or None
        A reference level per category (drawn as a black segment across the group).
    reference_label : str
    """

    title: str
    ylabel: str
    categories: list[str]
    bars: list[Series]
    reference: np.ndarray | None = None
    reference_label: str = "centralized"


@dataclass
class Curve:
    """Quality as a function of communication: per round and per cumulative byte."""

    label: str
    rounds: np.ndarray
    nbytes: np.ndarray
    mean: np.ndarray
    std: np.ndarray


@dataclass
class CommPanel:
    """One row of the communication figure: iterative curves, one-shot points, a centralized level."""

    title: str
    curves: list[Curve] = field(default_factory=list)
    points: list[Curve] = field(default_factory=list)
    centralized: float | None = None


def style_map(labels: Sequence[tuple[str, str]]) -> dict[str, Style]:
    """Assign each method label a distinct colour and marker.

    Parameters
    ----------
    labels : sequence of (method, label)
        In display order; a label listed twice keeps its first style.

    Returns
    -------
    styles : dict of str to Style
        Keyed by label. Known methods keep their colour; a second label of the same
        method gets another marker and shade.
    """
    styles: dict[str, Style] = {}
    seen: dict[str, int] = {}
    extra = 0
    for method, label in labels:
        if label in styles:
            continue
        count = seen.get(method, 0)
        seen[method] = count + 1
        if method in _METHOD_STYLES:
            color, marker = _METHOD_STYLES[method]
            if count:
                color = _shade(color, count)
                marker = _EXTRA_MARKERS[(count - 1) % len(_EXTRA_MARKERS)]
        else:
            color = _EXTRA_COLORS[extra % len(_EXTRA_COLORS)]
            marker = _EXTRA_MARKERS[extra % len(_EXTRA_MARKERS)]
            extra += 1
        styles[label] = Style(color, marker)
    return styles


def _shade(color: str, step: int) -> str:
    """Alternately darker and lighter variants of a colour."""
    rgb = np.array(matplotlib.colors.to_rgb(color))
    factor = 0.55 ** ((step + 1) // 2) if step % 2 else None
    out = rgb * factor if factor is not None else 1.0 - (1.0 - rgb) * 0.55 ** (step // 2)
    r, g, b = (float(v) for v in np.clip(out, 0.0, 1.0))
    return str(matplotlib.colors.to_hex((r, g, b)))


def _style(styles: Mapping[str, Style], label: str) -> Style:
    return styles.get(label, Style("#7f7f7f", "o"))


@contextmanager
def _figure(n_panels: int, ncols: int, panel_size: tuple[float, float]) -> Iterator[tuple[Figure, list[Axes]]]:
    """A constrained-layout figure with ``n_panels`` axes in a grid (extra cells removed)."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    with plt.rc_context(_RC):  # type: ignore[arg-type]
        fig, grid = plt.subplots(
            nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
            squeeze=False, layout="constrained",
        )
        axes = list(grid.ravel())
        for ax in axes[n_panels:]:
            ax.remove()
        try:
            yield fig, axes[:n_panels]
        finally:
            plt.close(fig)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return path


def _legend(fig: Figure, handles: dict[str, Line2D]) -> None:
    """One figure legend below the panels."""
    if handles:
        fig.legend(
            list(handles.values()), list(handles.keys()), loc="outside lower center",
            ncol=min(len(handles), 4), frameon=False,
        )


def _handle(style: Style, *, reference: bool = False) -> Line2D:
    if reference:
        return Line2D([], [], color=style.color, linestyle="--", linewidth=1.6)
    return Line2D([], [], color=style.color, marker=style.marker, linestyle="-", markersize=7)


def _dodge(x: np.ndarray, index: int, count: int, xscale: str) -> np.ndarray:
    """Shift a series sideways so error bars of methods at one x do not hide each other."""
    if count < 2:
        return x
    offset = (index - (count - 1) / 2.0) / count
    if xscale == "log":
        return np.asarray(x * 10.0 ** (0.12 * offset))
    return np.asarray(x + 0.25 * offset * _min_gap(x))


def _min_gap(x: np.ndarray) -> float:
    values = np.unique(x[np.isfinite(x)])
    return float(np.min(np.diff(values))) if values.size > 1 else 1.0


def _floor(panel: Panel) -> float | None:
    """A lower y-limit that keeps a far-off method from squashing all others, or None.

    The "core" is the better half of the methods (by median). The visible range reaches
    down to ``top - 8 × (top - lowest core value)``; points below are clipped (drawn at
    the bottom edge with their value written).
    """
    lines = [s for s in panel.series + panel.references if np.any(np.isfinite(s.mean))]
    if len(lines) < 3:
        return None
    lines.sort(key=lambda s: -float(np.nanmedian(s.mean)))
    core = lines[: math.ceil(len(lines) / 2)]
    top = max(float(np.nanmax(s.mean + np.nan_to_num(s.std))) for s in lines)
    core_low = min(float(np.nanmin(s.mean - np.nan_to_num(s.std))) for s in core)
    floor = top - 8.0 * max(top - core_low, 1e-9 * max(1.0, abs(top)))
    values = np.concatenate([s.mean for s in lines])
    values = values[np.isfinite(values)]
    visible = values[values >= floor]
    lowest = float(values.min())
    # Clip only when it at least halves the range that has to be shown.
    if lowest >= floor or visible.size == 0 or top - lowest < 2.0 * (top - float(visible.min())):
        return None
    return floor


def _draw_panel(
    ax: Axes, panel: Panel, styles: Mapping[str, Style], xscale: str
) -> tuple[dict[str, Line2D], list[tuple[float, float, str]]]:
    """Draw one sweep panel; return legend handles by label and the clipped points (x, y, colour)."""
    handles: dict[str, Line2D] = {}
    floor = _floor(panel)
    clipped: list[tuple[float, float, str]] = []
    for i, s in enumerate(panel.series):
        st = _style(styles, s.label)
        x = _dodge(s.x, i, len(panel.series), xscale)
        ok = np.isfinite(s.mean)
        if floor is not None:
            low = ok & (s.mean < floor)
            clipped += [(float(a), float(b), st.color) for a, b in zip(x[low], s.mean[low], strict=True)]
            ok &= ~low
        ax.errorbar(
            x[ok], s.mean[ok], yerr=np.nan_to_num(s.std[ok]), color=st.color, marker=st.marker,
            markersize=7, linewidth=1.8, capsize=3, label=s.label,
        )
        handles[s.label] = _handle(st)
    below: list[tuple[str, float, str]] = []
    for ref in panel.references:
        st = _style(styles, ref.label)
        level, spread = float(ref.mean[0]), float(np.nan_to_num(ref.std[0]))
        if not math.isfinite(level):
            continue
        if floor is not None and level < floor:
            below.append((ref.label, level, st.color))
            continue
        ax.axhline(level, color=st.color, linestyle="--", linewidth=1.6)
        if spread > 0:
            ax.axhspan(level - spread, level + spread, color=st.color, alpha=0.08, linewidth=0)
        handles.setdefault(ref.label, _handle(st, reference=True))
    for j, (label, level, color) in enumerate(below):
        ax.text(0.01, 0.02 + 0.08 * j, f"{label}: {level:.3g} (below the axis)".replace("-", "−"),
                transform=ax.transAxes, fontsize=8, color=color, fontweight="bold", va="bottom")
    if clipped:
        handles[OFF_SCALE] = Line2D([], [], color="#555555", marker="v", linestyle="", markersize=8)
    ax.set_title(panel.title)
    ax.set_ylabel(panel.ylabel)
    return handles, clipped


OFF_SCALE = "below the axis (value written)"


def _mark_clipped(ax: Axes, clipped: list[tuple[float, float, str]]) -> None:
    """Show points below the visible range as arrows at the bottom edge, labelled with their value.

    Call after the x-axis is final: a label that would run into the previous one is stacked above it.
    """
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top)
    points_per_pixel = 72.0 / ax.figure.dpi
    last, level = -math.inf, 0
    for x, y, color in sorted(clipped):
        at = float(ax.transData.transform((x, bottom))[0]) * points_per_pixel
        level = level + 1 if at - last < 42.0 else 0
        last = at
        ax.plot([x], [bottom], marker="v", color=color, markersize=9, clip_on=False, zorder=5)
        ax.annotate(
            f"{y:.3g}".replace("-", "−"), (x, bottom), xytext=(6, 1 + 11 * level), textcoords="offset points",
            ha="left", va="bottom", fontsize=8, color=color, fontweight="bold",
        )


def _set_xaxis(ax: Axes, xscale: str, xlabel: str, ticks: Sequence[float] | None, ticklabels: Sequence[str] | None) -> None:
    if xscale == "log":
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    if ticks is not None:
        ax.xaxis.set_major_locator(FixedLocator(list(ticks)))
        ax.xaxis.set_minor_locator(NullLocator())
        if ticklabels is not None:
            ax.set_xticklabels(list(ticklabels))
        if len(ticks) == 1:
            ax.set_xlim(ticks[0] - 1, ticks[0] + 1)
        elif xscale != "log":
            gap = 0.35 * _min_gap(np.asarray(ticks, dtype=float))
            ax.set_xlim(min(ticks) - gap, max(ticks) + gap)


def plot_panels(
    panels: Sequence[Panel],
    path: Path,
    *,
    styles: Mapping[str, Style],
    xlabel: str,
    xscale: str = "linear",
    ticks: Sequence[float] | None = None,
    ticklabels: Sequence[str] | None = None,
    title: str = "",
    ncols: int = 3,
) -> Path:
    """Draw metric-sweep panels (mean ± std over seeds) into one PNG.

    Parameters
    ----------
    panels : sequence of Panel
        One axes each; must not be empty.
    path : Path
        Output PNG.
    styles : mapping of str to Style
        Colour and marker per method label.
    xlabel : str
    xscale : {"linear", "log"}
    ticks, ticklabels : sequence, optional
        Fixed x ticks (e.g. the swept values, or category indices and their names).
    title : str
        Figure title.
    ncols : int
        Panels per row.

    Returns
    -------
    path : Path
    """
    if not panels:
        raise ValueError("plot_panels needs at least one panel.")
    with _figure(len(panels), ncols, (5.2, 3.9)) as (fig, axes):
        handles: dict[str, Line2D] = {}
        ncols = min(ncols, len(panels))
        for i, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
            drawn, clipped = _draw_panel(ax, panel, styles, xscale)
            for label, handle in drawn.items():
                handles.setdefault(label, handle)
            bottom_row = i + ncols >= len(panels)
            _set_xaxis(ax, xscale, xlabel if bottom_row else "", ticks, ticklabels)
            if clipped:
                _mark_clipped(ax, clipped)
            if i % ncols and panel.ylabel == panels[i - 1].ylabel:
                ax.set_ylabel("")
        if title:
            fig.suptitle(title)
        if OFF_SCALE in handles:
            handles[OFF_SCALE] = handles.pop(OFF_SCALE)  # last in the legend
        _legend(fig, handles)
        return _save(fig, path)


def plot_grouped_bars(
    panels: Sequence[BarPanel],
    path: Path,
    *,
    styles: Mapping[str, Style],
    xlabel: str = "",
    title: str = "",
    ncols: int = 2,
) -> Path:
    """Grouped bars (mean ± std over seeds) per category and method, with a reference level.

    Parameters
    ----------
    panels : sequence of BarPanel
        One axes each; must not be empty.
    path : Path
    styles : mapping of str to Style
    xlabel, title : str
    ncols : int

    Returns
    -------
    path : Path
    """
    if not panels:
        raise ValueError("plot_grouped_bars needs at least one panel.")
    widest = max(len(p.categories) * max(len(p.bars), 1) for p in panels)
    width = float(np.clip(1.6 + 0.32 * widest, 5.2, 12.0))
    with _figure(len(panels), ncols, (width, 3.9)) as (fig, axes):
        handles: dict[str, Line2D] = {}
        for ax, panel in zip(axes, panels, strict=True):
            handles.update(_draw_bars(ax, panel, styles))
            ax.set_xlabel(xlabel)
        if title:
            fig.suptitle(title)
        _legend(fig, handles)
        return _save(fig, path)


def _draw_bars(ax: Axes, panel: BarPanel, styles: Mapping[str, Style]) -> dict[str, Line2D]:
    handles: dict[str, Line2D] = {}
    n = max(len(panel.bars), 1)
    width = 0.8 / n
    centres = np.arange(len(panel.categories), dtype=float)
    top = 0.0
    for i, bar in enumerate(panel.bars):
        st = _style(styles, bar.label)
        pos = centres[bar.x.astype(int)] + (i - (n - 1) / 2.0) * width
        ok = np.isfinite(bar.mean)
        ax.bar(
            pos[ok], bar.mean[ok], width=width * 0.92, yerr=np.nan_to_num(bar.std[ok]),
            color=st.color, alpha=0.85, capsize=2, error_kw={"elinewidth": 1.0},
        )
        if ok.any():
            top = max(top, float(np.nanmax(bar.mean[ok] + np.nan_to_num(bar.std[ok]))))
        handles[bar.label] = Line2D([], [], color=st.color, marker="s", linestyle="", markersize=10)
    if panel.reference is not None:
        for c, level in zip(centres, panel.reference, strict=True):
            if math.isfinite(level):
                ax.hlines(level, c - 0.45, c + 0.45, colors="black", linestyles="--", linewidth=1.8)
                top = max(top, float(level))
        if np.isfinite(panel.reference).any():
            handles[panel.reference_label] = Line2D([], [], color="black", linestyle="--", linewidth=1.8)
    ax.set_xticks(centres, panel.categories)
    ax.grid(axis="x", visible=False)
    ax.set_ylim(0.0, min(1.0, top * 1.12) if top > 0 else 1.0)
    ax.set_ylabel(panel.ylabel)
    ax.set_title(panel.title)
    return handles


def plot_communication(
    panels: Sequence[CommPanel],
    path: Path,
    *,
    styles: Mapping[str, Style],
    title: str = "",
) -> Path:
    """Quality against rounds (left) and against cumulative bytes (right, log x), one row per panel.

    Parameters
    ----------
    panels : sequence of CommPanel
        Iterative methods as curves, one-shot methods as single points, the centralized
        level as a horizontal line.
    path : Path
    styles : mapping of str to Style
    title : str

    Returns
    -------
    path : Path
    """
    if not panels:
        raise ValueError("plot_communication needs at least one panel.")
    with _figure(2 * len(panels), 2, (5.4, 3.7)) as (fig, axes):
        handles: dict[str, Line2D] = {}
        for row, panel in enumerate(panels):
            by_round, by_bytes = axes[2 * row], axes[2 * row + 1]
            handles.update(_draw_comm(by_round, panel, styles, "rounds"))
            handles.update(_draw_comm(by_bytes, panel, styles, "bytes"))
            by_round.set_xlabel("communication rounds")
            by_round.xaxis.set_major_locator(MaxNLocator(integer=True))
            by_bytes.set_xlabel(BYTES_LABEL)
            by_bytes.set_xscale("log")
            # Labels at 1, 2 and 5 × 10^k in engineering units; no minor labels (they collide
            # when the range spans less than a decade).
            by_bytes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            by_bytes.xaxis.set_major_formatter(EngFormatter(unit="B", places=0))
            by_bytes.xaxis.set_minor_formatter(NullFormatter())
            by_round.set_title(f"{panel.title} — per round")
            by_bytes.set_title(f"{panel.title} — per byte")
            by_round.set_ylabel(LOGLIK_LABEL)
            by_bytes.set_ylabel(LOGLIK_LABEL)
        if title:
            fig.suptitle(title)
        _legend(fig, handles)
        return _save(fig, path)


def _draw_comm(ax: Axes, panel: CommPanel, styles: Mapping[str, Style], axis: str) -> dict[str, Line2D]:
    handles: dict[str, Line2D] = {}
    for curve in panel.curves:
        st = _style(styles, curve.label)
        x = curve.rounds if axis == "rounds" else curve.nbytes
        ok = np.isfinite(curve.mean) & np.isfinite(x) & (x > 0)
        ax.plot(x[ok], curve.mean[ok], color=st.color, marker=st.marker, markersize=4, linewidth=1.8, markevery=max(1, ok.sum() // 12))
        std = np.nan_to_num(curve.std[ok])
        ax.fill_between(x[ok], curve.mean[ok] - std, curve.mean[ok] + std, color=st.color, alpha=0.15, linewidth=0)
        handles[curve.label] = _handle(st)
    for point in panel.points:
        st = _style(styles, point.label)
        x = point.rounds if axis == "rounds" else point.nbytes
        if math.isfinite(point.mean[0]) and x[0] > 0:
            ax.errorbar(
                x, point.mean, yerr=np.nan_to_num(point.std), color=st.color, marker=st.marker,
                markersize=11, markeredgecolor="black", linestyle="", capsize=3, zorder=5,
            )
            handles[point.label] = Line2D([], [], color=st.color, marker=st.marker, markeredgecolor="black", linestyle="", markersize=10)
    if panel.centralized is not None and math.isfinite(panel.centralized):
        ax.axhline(panel.centralized, color="black", linestyle="--", linewidth=1.6)
        handles["centralized"] = Line2D([], [], color="black", linestyle="--", linewidth=1.6)
    return handles


def plot_density_contours(
    clients: list[np.ndarray],
    models: Mapping[str, list[MixtureState] | MixtureState],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Log-density contours of 2-D mixtures over the clients' points, one panel per model.

    Parameters
    ----------
    clients : list of ndarray of shape (n_c, 2)
        Each client's points, drawn in light colours (one colour per client) in every
        panel; may be empty (the extent then comes from the models).
    models : mapping of str to MixtureState or list of MixtureState
        Panel title → model. A list (e.g. ``"local"``) holds one model per client, drawn
        in that client's colour; a single model is drawn in a sequential colour map.
    path : Path
        Output PNG.
    title : str
        Figure title.

    Returns
    -------
    path : Path

    Raises
    ------
    ValueError
        If there are no models, or a client array or a model is not 2-D.

    Notes
    -----
    Contour levels are the log-density at the 10 %, 25 %, 50 %, 75 % and 90 % quantiles of
    the model's own score on the points (its client's points for a list entry), so the
    outer line encloses the densest region holding about 90 % of those points.
    """
    points = _check_contour_inputs(clients, models)
    extent = _extent(points, models)
    xx, yy = np.meshgrid(np.linspace(extent[0], extent[1], 220), np.linspace(extent[2], extent[3], 220))
    grid = np.column_stack([xx.ravel(), yy.ravel()])
    colors = _client_colors(max(len(points), _max_list_len(models)))
    ratio = float(np.clip((extent[3] - extent[2]) / (extent[1] - extent[0]), 0.4, 1.6))
    ncols = 2 if len(models) == 4 else 3
    with _figure(len(models), ncols, (4.6, 4.6 * ratio + 0.9)) as (fig, axes):
        for ax, (name, model) in zip(axes, models.items(), strict=True):
            _scatter_clients(ax, points, colors)
            if isinstance(model, MixtureState):
                _contour_single(ax, model, grid, xx.shape, points)
            else:
                _contour_list(ax, model, grid, xx.shape, points, colors)
            ax.set_title(name)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel("feature 1")
            ax.set_ylabel("feature 2")
        if title:
            fig.suptitle(title)
        if 0 < len(points) <= 10:
            handles = {
                f"client {c + 1}": Line2D([], [], color=colors[c], marker="o", linestyle="", markersize=7)
                for c in range(len(points))
            }
            _legend(fig, handles)
        return _save(fig, path)


def _check_contour_inputs(clients: Sequence[np.ndarray], models: Mapping[str, list[MixtureState] | MixtureState]) -> list[np.ndarray]:
    if not models:
        raise ValueError("plot_density_contours needs at least one model.")
    points = [np.asarray(X, dtype=np.float64) for X in clients]
    for c, X in enumerate(points):
        if X.ndim != 2 or X.shape[1] != 2:
            raise ValueError(f"density contours need 2-D data: client {c} has shape {X.shape}, expected (n, 2).")
    for name, model in models.items():
        for state in [model] if isinstance(model, MixtureState) else model:
            if state.n_features != 2:
                raise ValueError(f"density contours need 2-D models: {name!r} has {state.n_features} features.")
        if not isinstance(model, MixtureState) and not model:
            raise ValueError(f"model list {name!r} is empty.")
    return points


def _max_list_len(models: Mapping[str, list[MixtureState] | MixtureState]) -> int:
    return max([len(m) for m in models.values() if not isinstance(m, MixtureState)], default=0)


def _extent(points: Sequence[np.ndarray], models: Mapping[str, list[MixtureState] | MixtureState]) -> tuple[float, float, float, float]:
    """Bounding box of the points (or of the models' means ± 3 sd), padded by 8 %."""
    stacked = [X for X in points if X.size]
    if stacked:
        allx = np.concatenate(stacked)
        lo, hi = allx.min(axis=0), allx.max(axis=0)
    else:
        states = [s for m in models.values() for s in ([m] if isinstance(m, MixtureState) else m)]
        chol = np.concatenate([s.covariance_cholesky() for s in states])
        sd = 3.0 * np.sqrt(np.max(np.sum(chol**2, axis=2), axis=0))
        means = np.concatenate([s.means for s in states])
        lo, hi = means.min(axis=0) - sd, means.max(axis=0) + sd
    pad = 0.08 * np.maximum(hi - lo, 1e-9)
    return float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1])


def _client_colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = matplotlib.colormaps[_CLIENT_CMAP]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


def _scatter_clients(ax: Axes, points: Sequence[np.ndarray], colors: Sequence[tuple[float, ...]]) -> None:
    for c, X in enumerate(points):
        ax.scatter(X[:, 0], X[:, 1], s=5, color=colors[c], alpha=0.22, linewidths=0, rasterized=True)


_QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)


def _levels(state: MixtureState, X: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Increasing log-density levels: quantiles of the score on ``X``, or below the grid maximum."""
    if X.size:
        levels = np.quantile(score_samples(X, state), _QUANTILES)
    else:
        levels = float(np.max(z)) - np.array([8.0, 4.0, 2.0, 1.0, 0.5])
    levels = np.unique(levels[np.isfinite(levels)])
    return levels if levels.size else np.array([float(np.max(z)) - 1.0])


def _contour_single(ax: Axes, state: MixtureState, grid: np.ndarray, shape: tuple[int, ...], points: Sequence[np.ndarray]) -> None:
    z = score_samples(grid, state).reshape(shape)
    stacked = [X for X in points if X.size]
    X = np.concatenate(stacked) if stacked else np.empty((0, 2))
    ax.contour(grid[:, 0].reshape(shape), grid[:, 1].reshape(shape), z, levels=_levels(state, X, z), cmap="viridis",
               linewidths=1.5, linestyles="solid")
    ax.plot(state.means[:, 0], state.means[:, 1], "k+", markersize=7, markeredgewidth=1.2)


def _contour_list(
    ax: Axes,
    states: Sequence[MixtureState],
    grid: np.ndarray,
    shape: tuple[int, ...],
    points: Sequence[np.ndarray],
    colors: Sequence[tuple[float, ...]],
) -> None:
    for c, state in enumerate(states):
        z = score_samples(grid, state).reshape(shape)
        X = points[c] if c < len(points) else np.empty((0, 2))
        if X.size:
            ax.scatter(X[:, 0], X[:, 1], s=6, color=colors[c], alpha=0.45, linewidths=0, rasterized=True)
        ax.contour(
            grid[:, 0].reshape(shape), grid[:, 1].reshape(shape), z, levels=_levels(state, X, z),
            colors=[_darker(colors[c])], linewidths=1.3, linestyles="solid",
        )


def _darker(color: tuple[float, ...]) -> tuple[float, float, float]:
    """The colour at 75 % brightness, so contour lines stand out from the light points."""
    r, g, b = matplotlib.colors.to_rgb(tuple(color[:3]))  # type: ignore[arg-type]
    return (0.75 * r, 0.75 * g, 0.75 * b)
