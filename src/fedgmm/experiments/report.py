"""A readable markdown report, with tables and PNG plots, of a study's results file."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedgmm.experiments import plots
from fedgmm.experiments.plots import (
    LOGLIK_LABEL,
    BarPanel,
    CommPanel,
    Curve,
    Panel,
    Series,
    Style,
)
from fedgmm.experiments.results import ResultRow, RoundPoint, read_rows

METRICS = ("test_loglik", "auc_pr", "auroc", "rounds", "bytes_up", "bytes_down", "wall_seconds")
"""Quantities :func:`summarize` aggregates over seeds."""

BASE_FIELDS = ("dataset", "partitioner", "alpha", "n_clients", "covariance_type", "contamination")
"""Fields that describe a cell for every method."""

SETTING_FIELDS = ("contamination", "n_components", "local_components", "synthetic_size", "hybrid_rounds")
"""Settings a study may sweep; elsewhere the report holds them at their most common value.

``hybrid_rounds`` is the ``max_rounds`` of a hybrid row (None for other methods)."""

METHOD_ORDER = ("centralized", "fedem", "fedgengmm", "hybrid", "union", "local")

# Method-specific settings each method depends on (as the study runner's RELEVANT table);
# the others are ignored for it (a centralized row does not care about the clients' K).
_METHOD_FIELDS: dict[str, frozenset[str]] = {
    "centralized": frozenset({"n_components"}),
    "local": frozenset({"local_components"}),
    "union": frozenset({"local_components"}),
    "fedgengmm": frozenset({"n_components", "local_components", "synthetic_size"}),
    "fedem": frozenset({"n_components", "local_components", "max_rounds"}),
    "hybrid": frozenset({"n_components", "local_components", "synthetic_size", "max_rounds"}),
}
_OPTIONAL_FIELDS = ("n_components", "local_components", "synthetic_size", "max_rounds")
_METRIC_LABELS = {"test_loglik": LOGLIK_LABEL, "auc_pr": "AUC-PR", "auroc": "AUROC"}
_HYBRID_SERIES = "FedGenGMM + federated EM"
_OUR_PNGS = ("loglik_vs_alpha", "auc_pr", "communication_*", "loglik_vs_local_k",
             "loglik_vs_synthetic_size", "loglik_vs_global_k", "hybrid_rounds", "robustness_contamination", "density_*",
             "privacy_utility", "privacy_attack")
DASH = "—"


# --------------------------------------------------------------------------- summaries


def summarize(rows: list[ResultRow], by: list[str]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of each metric, grouped by the given fields.

    Parameters
    ----------
    rows : list of ResultRow
    by : list of str
        ResultRow field names to group by (e.g. ``["dataset", "alpha", "label"]``).

    Returns
    -------
    table : list of dict
        One dict per group, in order of first appearance, with the ``by`` fields, ``n``
        (rows in the group, i.e. seeds) and for every metric in :data:`METRICS` the keys
        ``<metric>_mean``, ``<metric>_std`` and ``<metric>_n``. NaN and missing (None)
        values are left out: ``<metric>_n`` counts the finite ones, the mean is NaN when
        there are none, and the std is the sample standard deviation (``ddof=1``), NaN
        with fewer than two finite values.

    Raises
    ------
    ValueError
        If a ``by`` field is not a ResultRow field.
    """
    known = set(ResultRow.__dataclass_fields__)
    unknown = [f for f in by if f not in known]
    if unknown:
        raise ValueError(f"cannot group by {unknown}: not ResultRow fields ({sorted(known)}).")
    groups: dict[tuple[Any, ...], list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(tuple(getattr(row, f) for f in by), []).append(row)
    table = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(by, key, strict=True))
        entry["n"] = len(members)
        for metric in METRICS:
            mean, std, n = mean_std([metric_value(r, metric) for r in members])
            entry.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_n": n})
        table.append(entry)
    return table


def metric_value(row: ResultRow, metric: str) -> float:
    """A row's metric as a float (NaN when missing)."""
    value = getattr(row, metric)
    return math.nan if value is None else float(value)


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample std (``ddof=1``) and count of the finite values (NaN where undefined)."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan, 0
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan
    return float(np.mean(finite)), std, int(finite.size)


# --------------------------------------------------------------------------- row helpers


def setting(row: ResultRow, name: str) -> Any:
    """A row's value of a field, or None when the row's method does not depend on it."""
    if name == "hybrid_rounds":
        return row.max_rounds if row.method == "hybrid" else None
    if name in _OPTIONAL_FIELDS and row.method in _METHOD_FIELDS and name not in _METHOD_FIELDS[row.method]:
        return None
    return getattr(row, name)


def dedupe(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """Keep one row per ``key`` (the last written: a re-run replaces an earlier result)."""
    by_key: dict[str, ResultRow] = {}
    for row in rows:
        by_key.pop(row.key, None)
        by_key[row.key] = row
    return list(by_key.values())


def main_settings(rows: Sequence[ResultRow]) -> dict[str, dict[str, Any]]:
    """Per dataset, the most common value of each sweepable setting.

    Ties (a setting swept evenly over the whole grid) go to the study default — the value
    the runner writes on rows of methods that ignore the setting — when it is among them,
    else to the middle of the tied values.
    """
    counts: dict[str, dict[str, Counter[Any]]] = {}
    hints: dict[str, dict[str, Counter[Any]]] = {}
    for row in rows:
        per = counts.setdefault(row.dataset, {f: Counter() for f in SETTING_FIELDS})
        hint = hints.setdefault(row.dataset, {f: Counter() for f in SETTING_FIELDS})
        for f in SETTING_FIELDS:
            value = setting(row, f)
            if value is not None:
                per[f][value] += 1
            elif f in _OPTIONAL_FIELDS and getattr(row, f) is not None:
                hint[f][getattr(row, f)] += 1
    return {
        ds: {f: _most_common(c, hints[ds][f], f) for f, c in per.items() if c}
        for ds, per in counts.items()
    }


def _most_common(counts: Counter[Any], hints: Counter[Any], name: str) -> Any:
    top = max(counts.values())
    tied = [v for v, c in counts.items() if c == top]
    if len(tied) == 1:
        return tied[0]
    default = [v for v, _ in hints.most_common() if v in tied]
    if default:
        return default[0]
    tied.sort(key=_parse_k if name == "local_components" else _sort_key)
    return tied[len(tied) // 2]


def _at_main(row: ResultRow, main: dict[str, dict[str, Any]], free: str | None = None) -> bool:
    """Whether every setting but ``free`` is at its main value (or ignored by the method)."""
    for f in SETTING_FIELDS:
        if f == free:
            continue
        value = setting(row, f)
        if value is not None and value != main.get(row.dataset, {}).get(f, value):
            return False
    return True


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value))


def _method_rank(row: ResultRow) -> tuple[int, tuple[Any, ...]]:
    rank = METHOD_ORDER.index(row.method) if row.method in METHOD_ORDER else len(METHOD_ORDER)
    return rank, _natural(row.label)


def _labels(rows: Iterable[ResultRow]) -> list[str]:
    """Method labels in display order (canonical method order, then label)."""
    first: dict[str, ResultRow] = {}
    for row in sorted(rows, key=_method_rank):
        first.setdefault(row.label, row)
    return list(first)


def _group(rows: Iterable[ResultRow], fields: Sequence[str]) -> list[tuple[dict[str, Any], list[ResultRow]]]:
    """Rows grouped by exact field values, groups sorted by those values."""
    groups: dict[tuple[Any, ...], list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(tuple(getattr(row, f) for f in fields), []).append(row)
    ordered = sorted(groups.items(), key=lambda kv: [_sort_key(v) for v in kv[0]])
    return [(dict(zip(fields, key, strict=True)), members) for key, members in ordered]


def _varying(keys: Sequence[dict[str, Any]]) -> list[str]:
    """Fields whose value differs between the given group keys."""
    if not keys:
        return []
    return [f for f in keys[0] if len({repr(k[f]) for k in keys}) > 1]


def _describe(key: dict[str, Any], fields: Iterable[str]) -> str:
    """Short human text of some fields of a group key, e.g. ``"digits · α=0.1"``."""
    parts = []
    for f in fields:
        value = key[f]
        if f == "alpha":
            parts.append("α: none" if value is None else f"α={value:g}")
        elif f == "n_clients":
            parts.append(f"{value} clients")
        elif f == "contamination":
            parts.append(f"contamination {value:g}")
        elif f == "covariance_type":
            parts.append(f"{value} cov.")
        else:
            parts.append(str(value))
    return " · ".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# --------------------------------------------------------------------------- formatting


def fmt_mean_std(mean: float, std: float, digits: int = 2, n: int | None = None, total: int | None = None) -> str:
    """``"mean ± std"`` (``"—"`` for NaN; the std left out when undefined; ``(n/total)`` when some failed)."""
    if not math.isfinite(mean):
        return DASH
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")
    if n is not None and total is not None and n < total:
        text += f" ({n}/{total})"
    return text.replace("-", "−")


def fmt_bytes(mean: float, std: float = math.nan) -> str:
    """Decimal byte units with the std in the same unit (``"1.23 ± 0.04 MB"``)."""
    if not math.isfinite(mean):
        return DASH
    units = ("B", "kB", "MB", "GB", "TB")
    power = 0 if mean < 1000 else min(int(math.log10(mean) // 3), len(units) - 1)
    scale = 1000.0**power
    value = mean / scale
    digits = 0 if power == 0 else max(0, 2 - math.floor(math.log10(max(value, 1e-12))))
    text = f"{value:.{digits}f}"
    if math.isfinite(std) and std > 0:
        text += f" ± {std / scale:.{digits}f}"
    return f"{text} {units[power]}"


def fmt_count(mean: float, std: float) -> str:
    """A count such as rounds: ``"1"`` when every seed agrees, else ``"31.3 ± 4.2"``."""
    if math.isfinite(mean) and not (math.isfinite(std) and std > 0) and float(mean).is_integer():
        return str(int(mean))
    return fmt_mean_std(mean, std, 1)


def md_table(headers: Sequence[str], body: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A GitHub-flavoured markdown table; ``align`` is one ``l``/``r`` per column."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = [_md_row(headers), _md_row(rule)] + [_md_row(r) for r in body]
    return "\n".join(lines)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _join(values: Iterable[Any]) -> str:
    items = sorted(set(values), key=_sort_key)
    return ", ".join(DASH if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in items)


# --------------------------------------------------------------------------- the study


@dataclass
class _Study:
    """Rows of one results file, their main settings, the method styles and the output folder."""

    rows: list[ResultRow]
    main: dict[str, dict[str, Any]]
    styles: dict[str, Style]
    out_dir: Path

    @classmethod
    def from_rows(cls, rows: list[ResultRow], out_dir: Path) -> _Study:
        main = main_settings(rows)
        # Labels of the main grid first: they get each method's own colour.
        ordered = sorted(rows, key=lambda r: (not _at_main(r, main), _method_rank(r)))
        styles = plots.style_map([(r.method, r.label) for r in ordered])
        styles[_HYBRID_SERIES] = plots.style_map([("hybrid", _HYBRID_SERIES)])[_HYBRID_SERIES]
        return cls(rows, main, styles, out_dir)

    def main_rows(self, free: str | None = None) -> list[ResultRow]:
        """Rows with every setting but ``free`` at its main value."""
        return [r for r in self.rows if _at_main(r, self.main, free)]

    def swept(self, name: str) -> list[Any]:
        """Distinct non-None values a setting takes across the rows."""
        return sorted({setting(r, name) for r in self.rows} - {None}, key=_sort_key)


# --------------------------------------------------------------------------- sweep panels


@dataclass
class _Sweep:
    """A metric against one field, for every group of the other cell fields where it varies."""

    panels: list[Panel]
    table: str


_Points = dict[str, dict[Any, list[float]]]  # label → x → values over seeds


def _sweep(
    groups: list[tuple[dict[str, Any], list[ResultRow]]],
    x_of: Callable[[ResultRow], Any],
    position: Callable[[Any], float],
    x_names: Callable[[Any], str],
    metric: str,
    series_label: Callable[[ResultRow], str] = lambda r: r.label,
) -> _Sweep:
    """Panels and a table of ``metric`` against ``x_of(row)`` per group; groups where nothing varies are left out.

    A label seen at two or more x values is a line; a label seen at one (or whose method
    ignores the field, x None) is a reference level.
    """
    varying = [f for f in _varying([k for k, _ in groups]) if f != "dataset"]
    panels: list[Panel] = []
    cells: list[tuple[str, _Points]] = []
    for key, members in groups:
        points: _Points = {}
        for row in sorted(members, key=_method_rank):
            points.setdefault(series_label(row), {}).setdefault(x_of(row), []).append(metric_value(row, metric))
        panel = _panel(points, position, metric)
        if panel.series and any(np.isfinite(s.mean).any() for s in panel.series):
            panel.title = _describe(key, ["dataset", *varying])
            panels.append(panel)
            cells.append((panel.title, points))
    return _Sweep(panels, _sweep_table(cells, position, x_names, metric) if cells else "")


def _is_line(points: dict[Any, list[float]]) -> bool:
    return sum(x is not None for x in points) >= 2


def _panel(by_label: _Points, position: Callable[[Any], float], metric: str) -> Panel:
    """Lines for labels seen at several x values, reference levels for the others."""
    panel = Panel("", _METRIC_LABELS.get(metric, metric))
    for label, points in by_label.items():
        if _is_line(points):
            order = sorted((x for x in points if x is not None), key=position)
            stats = [mean_std(points[x]) for x in order]
            panel.series.append(Series(
                label, np.array([position(x) for x in order], dtype=float),
                np.array([st[0] for st in stats]), np.array([st[1] for st in stats]),
            ))
        else:
            mean, std, _ = mean_std(v for values in points.values() for v in values)
            panel.references.append(Series(label, np.zeros(1), np.array([mean]), np.array([std])))
    return panel


def _sweep_table(
    cells: list[tuple[str, _Points]], position: Callable[[Any], float], x_names: Callable[[Any], str], metric: str
) -> str:
    """One table: a block of methods per cell, a column per swept value, ``fixed`` for the rest."""
    xs = sorted({x for _, by_label in cells for pts in by_label.values() for x in pts if x is not None}, key=position)
    digits = 3 if metric in ("auc_pr", "auroc") else 2
    body = []
    for title, by_label in cells:
        for i, (label, points) in enumerate(by_label.items()):
            if _is_line(points):
                line = [fmt_mean_std(*mean_std(points[x])[:2], digits) if x in points else DASH for x in xs] + [""]
            else:
                line = [DASH] * len(xs) + [fmt_mean_std(*mean_std(v for vs in points.values() for v in vs)[:2], digits)]
            body.append([title if i == 0 else "", label, *line])
    headers = ["cell", "method", *(x_names(x) for x in xs), "fixed"]
    if all(row[-1] == "" for row in body):
        headers, body = headers[:-1], [row[:-1] for row in body]
    caption = f"**{_METRIC_LABELS.get(metric, metric)}** (“fixed”: a method that does not use this setting, or ran at one value)"
    return caption + "\n\n" + md_table(headers, body, "ll" + "r" * (len(headers) - 2))


def _numeric_axis(values: Sequence[Any]) -> tuple[str, list[float], list[str]]:
    """Scale, ticks and tick labels for a numeric swept field."""
    ticks = [float(v) for v in values]
    positive = [t for t in ticks if t > 0]
    log = len(positive) == len(ticks) and len(ticks) > 1 and max(ticks) / min(ticks) >= 20
    return ("log" if log else "linear"), ticks, [f"{t:g}" for t in ticks]


def _parse_k(text: Any) -> tuple[int, float, float, str]:
    """Sort key of a local-K setting: fixed values first (``"5"``), then ranges (``"1-10"``)."""
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", str(text))]
    if not numbers:
        return (2, math.inf, math.inf, str(text))
    return (int(len(numbers) > 1), numbers[0], numbers[-1], str(text))


# --------------------------------------------------------------------------- sections


def _figure_md(path: Path, caption: str) -> str:
    return f"![{caption}]({path.name})\n\n*{caption}*"


def _header(study: _Study, results_path: Path, title: str, n_read: int) -> str:
    rows = study.rows
    studies = _join(r.study for r in rows)
    lines = [f"# {title}", ""]
    lines.append(
        f"Generated from `{results_path.name}`: {len(rows)} result rows"
        + (f" ({n_read - len(rows)} repeated rows dropped)" if n_read > len(rows) else "")
        + f", study `{studies}`. Values are mean ± standard deviation over seeds (sample std); "
        "“—” marks a missing or failed value, and “(2/3)” a mean over the seeds that gave one."
    )
    lines += ["", "## How the study was run", "", md_table(["setting", "values"], _setup_rows(study), "ll")]
    notes = _main_note(study)
    if notes:
        lines += ["", notes]
    failed = [r for r in rows if not math.isfinite(r.test_loglik)]
    if failed:
        lines += ["", f"**{len(failed)} run(s) gave no test log-likelihood** (failed or diverged):", ""]
        lines += [f"- {_failure(r)}" for r in failed[:12]]
        if len(failed) > 12:
            lines.append(f"- … and {len(failed) - 12} more (see the results file)")
    return "\n".join(lines)


def _failure(row: ResultRow) -> str:
    where = _describe({"dataset": row.dataset, "alpha": row.alpha, "contamination": row.contamination},
                      ["dataset", "alpha"] + (["contamination"] if row.contamination else []))
    error = str(row.extra.get("error", "")).splitlines()[0][:160] if row.extra.get("error") else ""
    return f"{where}, {row.label}, seed {row.seed}" + (f": `{error}`" if error else "")


def _setup_rows(study: _Study) -> list[list[str]]:
    rows = study.rows
    seeds = sorted({r.seed for r in rows})
    hybrid = sorted({r.max_rounds for r in rows if r.method == "hybrid" and r.max_rounds is not None})
    fedem = sorted({r.max_rounds for r in rows if r.method == "fedem" and r.max_rounds is not None})
    table = [
        ["datasets", _join(r.dataset for r in rows)],
        ["partitioner", _join(r.partitioner for r in rows)],
        ["α (Dirichlet concentration; small = heterogeneous clients)", _join(r.alpha for r in rows)],
        ["clients", _join(r.n_clients for r in rows)],
        ["seeds", f"{_join(seeds)} ({len(seeds)})"],
        ["methods", ", ".join(_labels(rows))],
        ["global K", _join("BIC-chosen" if k == -1 else k for k in study.swept("n_components"))],
        ["covariance type", _join(r.covariance_type for r in rows)],
        ["local K (fixed, or BIC range)", _join(study.swept("local_components"))],
        ["synthetic-set size (× Σn_c, or rows)", _join(study.swept("synthetic_size"))],
        ["contaminated fraction of clients", _join(study.swept("contamination"))],
    ]
    if fedem:
        table.append(["federated EM round limit", _join(fedem)])
    if hybrid:
        table.append(["hybrid: federated EM rounds after FedGenGMM", _join(hybrid)])
    total = sum(r.wall_seconds for r in rows if math.isfinite(r.wall_seconds))
    table.append(["total wall time of all runs", f"{total:.1f} s"])
    return table


def _main_note(study: _Study) -> str:
    swept = [f for f in SETTING_FIELDS if len(study.swept(f)) > 1]
    if not swept:
        return ""
    held: dict[str, list[str]] = {}
    for ds, values in sorted(study.main.items()):
        text = ", ".join(f"{f.replace('_', ' ')} = {_join([values[f]])}" for f in swept if f in values)
        held.setdefault(text, []).append(ds)
    parts = [text if len(held) == 1 else f"{', '.join(dss)}: {text}" for text, dss in held.items()]
    return ("Some settings were swept. Everywhere except in their own sweep they are held at their "
            "most common (“main”) value: " + "; ".join(parts) + ".")


def _loglik_section(study: _Study) -> str:
    rows = [r for r in study.main_rows() if r.alpha is not None]
    out = ["## Test log-likelihood"]
    groups = _group(rows, [f for f in BASE_FIELDS if f != "alpha"])
    alphas = sorted({r.alpha for r in rows if r.alpha is not None})
    sweep = _sweep(groups, lambda r: r.alpha, float, lambda a: f"α={a:g}", "test_loglik")
    if sweep.panels:
        path = plots.plot_panels(
            sweep.panels, study.out_dir / "loglik_vs_alpha.png", styles=study.styles,
            xlabel="Dirichlet α (log scale; small = heterogeneous clients)", xscale="log",
            ticks=alphas, ticklabels=[f"{a:g}" for a in alphas],
            title="Average test log-likelihood vs client heterogeneity (higher is better)",
        )
        out.append(_figure_md(path, "Test log-likelihood vs α per method; error bars: std over seeds."))
    out.append(_pivot_md(study.main_rows(), "test_loglik", 2))
    return "\n\n".join(out)


def _pivot_md(rows: list[ResultRow], metric: str, digits: int) -> str:
    """Per dataset, a table of methods × cells (α, …) of ``mean ± std`` over seeds."""
    columns = [f for f in BASE_FIELDS if f != "dataset"]
    varying = _varying([k for k, _ in _group(rows, columns)])
    blocks = []
    for key, members in _group(rows, ["dataset"]):
        cells = _group(members, varying)
        headers = ["method", *(_describe(k, varying) or "all" for k, _ in cells)]
        body = []
        for label in _labels(members):
            line = [_cell(metric, [r for r in cell_rows if r.label == label], digits) for _, cell_rows in cells]
            if any(c != DASH for c in line):
                body.append([label, *line])
        if body:
            blocks.append(f"**{key['dataset']}** — {_METRIC_LABELS.get(metric, metric)}\n\n{md_table(headers, body)}")
    return "\n\n".join(blocks)


def _cell(metric: str, rows: list[ResultRow], digits: int) -> str:
    """``mean ± std`` of a metric over rows (seeds), with ``(n/total)`` when some are missing."""
    if not rows:
        return DASH
    mean, std, n = mean_std(metric_value(r, metric) for r in rows)
    return fmt_mean_std(mean, std, digits, n, len(rows))


def _auc_section(study: _Study) -> str:
    rows = [r for r in study.main_rows() if r.auc_pr is not None and math.isfinite(r.auc_pr)]
    if not rows:
        return ""
    datasets = {r.dataset for r in rows}
    rows = [r for r in study.main_rows() if r.dataset in datasets]
    panels = _bar_panels(rows)
    out = ["## Anomaly detection (AUC-PR)",
           "Out-of-distribution points are the positives, −log p(x) the score; higher is better."]
    if panels:
        path = plots.plot_grouped_bars(
            panels, study.out_dir / "auc_pr.png", styles=study.styles,
            title="AUC-PR per dataset and method (dashed: centralized)",
        )
        out.append(_figure_md(path, "AUC-PR per method; error bars: std over seeds; dashed line: centralized GMM."))
    out.append(_pivot_md(rows, "auc_pr", 3))
    out.append(_pivot_md(rows, "auroc", 3))
    return "\n\n".join(out)


def _bar_panels(rows: list[ResultRow]) -> list[BarPanel]:
    fields = [f for f in BASE_FIELDS if f != "alpha"]
    groups = _group(rows, fields)
    varying = [f for f in _varying([k for k, _ in groups]) if f != "dataset"]
    panels = []
    for key, members in groups:
        cells = _group(members, ["alpha"])
        names = [_describe(k, ["alpha"]) for k, _ in cells]
        bars = []
        for label in _labels(r for r in members if r.method != "centralized"):
            stats = [mean_std(metric_value(r, "auc_pr") for r in cm if r.label == label)[:2] for _, cm in cells]
            bars.append(Series(label, np.arange(len(cells)), np.array([s[0] for s in stats]), np.array([s[1] for s in stats])))
        bars = [b for b in bars if np.isfinite(b.mean).any()]
        ref = np.array([mean_std(metric_value(r, "auc_pr") for r in cm if r.method == "centralized")[0] for _, cm in cells])
        if bars:
            panels.append(BarPanel(_describe(key, ["dataset", *varying]), "AUC-PR", names, bars,
                                   ref if np.isfinite(ref).any() else None))
    return panels


def _communication_section(study: _Study) -> str:
    rows = study.main_rows()
    out = ["## Communication"]
    groups = _group(rows, BASE_FIELDS)
    varying = [f for f in _varying([k for k, _ in groups]) if f != "dataset"]
    for dataset in sorted({r.dataset for r in rows}):
        panels = [p for k, m in groups if k["dataset"] == dataset for p in [_comm_panel(k, m, varying)] if p]
        if panels:
            path = plots.plot_communication(
                panels, study.out_dir / f"communication_{_slug(dataset)}.png", styles=study.styles,
                title=f"{dataset}: quality vs communication (federated EM per round; one-shot methods as points)",
            )
            out.append(_figure_md(path, f"{dataset}: test log-likelihood per round and per cumulative byte; "
                                        "big markers: one-shot methods; dashed: centralized."))
    ok = [r for r in rows if "error" not in r.extra]
    out.append(_comm_table(ok))
    reach = _reach_table(ok)
    if reach:
        out.append(reach)
    return "\n\n".join(out)


def _leakage_section(study: _Study) -> str:
    """Quality, bytes uploaded and membership-attack AUC of the uploads, per variant and α (mean ± std over seeds).

    Shown when the rows carry ``membership_auc`` (studies that upload local models); the
    gap is to the centralized model of the same cell and seed.
    """
    rows = [r for r in study.rows if "error" not in r.extra and math.isfinite(r.test_loglik)]
    if not any("membership_auc" in r.extra for r in rows):
        return ""
    central = {(r.dataset, r.alpha, r.seed): r.test_loglik for r in rows if r.method == "centralized"}
    body = []
    for (dataset, label, alpha), members in sorted(
        _by_key(rows, lambda r: (r.dataset, r.label, r.alpha)).items(), key=lambda kv: (kv[0][0], _sort_key(kv[0][2]), _natural(kv[0][1]))
    ):
        if members[0].method == "centralized":
            continue
        gap = mean_std(central[(r.dataset, r.alpha, r.seed)] - r.test_loglik for r in members if (r.dataset, r.alpha, r.seed) in central)
        up = mean_std(float(r.bytes_up) for r in members)
        leak = mean_std(float(r.extra["membership_auc"]) for r in members if "membership_auc" in r.extra)
        body.append([
            dataset, label, _join([alpha]), fmt_mean_std(gap[0], gap[1]), fmt_bytes(up[0], up[1]),
            fmt_mean_std(leak[0], leak[1]) if leak[2] else "—",
        ])
    table = md_table(["data", "method", "α", "gap to centralized (nats/sample)", "bytes up", "upload membership AUC"], body)
    return "\n\n".join([
        "## Quality, bytes and leakage",
        "Gap: centralized minus method test log-likelihood (lower is better). Membership AUC: a "
        "likelihood-threshold attack on each uploaded local model, its client's rows against as many "
        "test rows (0.5 = chance), averaged over clients.",
        table,
    ])


#: Attack read-outs a privacy row carries (``extra`` keys), with their column / series names.
_ATTACK_FIELDS = (
    ("membership_auc", "upload, likelihood"), ("membership_auc_ratio", "upload, density ratio"),
    ("global_membership_auc", "global, likelihood"), ("global_membership_auc_ratio", "global, density ratio"),
)


def _epsilon(row: ResultRow) -> float | None:
    """A privacy-swept row's ε (inf for the non-private run); None for rows that ignore ε."""
    settings = row.extra.get("settings", {})
    if "epsilon" not in settings:
        return None
    value = settings["epsilon"]
    return math.inf if value is None else float(value)


def _privacy_section(study: _Study) -> str:
    """Utility and membership-attack AUC against ε (``[sweep] epsilon``): two figures and a table, or ''.

    The non-private run (ε = ∞) sits at the right end of the axis; centralized (raw rows,
    no privacy) is a dashed reference in the utility plot, chance (0.5) in the attack plot.
    """
    rows = [r for r in study.rows if "error" not in r.extra and math.isfinite(r.test_loglik)]
    swept = [r for r in rows if _epsilon(r) is not None]
    if len({_epsilon(r) for r in swept}) < 2:
        return ""
    finite = sorted({e for r in swept if (e := _epsilon(r)) is not None and math.isfinite(e)})
    off = 2.0 * finite[-1] if finite else 1.0

    def position(eps: float) -> float:
        return off if math.isinf(eps) else eps

    ticks = [*finite, off] if finite else [off]
    names = [f"{e:g}" for e in finite] + ["∞ (off)"]
    base = {r.method: LABELS_BY_METHOD.get(r.method, r.method) for r in swept}
    central = {(r.dataset, r.alpha, r.seed): r.test_loglik for r in rows if r.method == "centralized"}
    utility: list[Panel] = []
    attack: list[Panel] = []
    body = []
    has_pr = any(r.auc_pr is not None for r in swept)
    for key, members in _group(swept, ["dataset", "alpha"]):
        title = _describe(key, ["dataset", "alpha"])
        cell_central = [r for r in rows if r.method == "centralized" and r.dataset == key["dataset"] and r.alpha == key["alpha"]]
        panels = {"test_loglik": Panel(title, LOGLIK_LABEL), "auc_pr": Panel(title, "AUC-PR")}
        pa = Panel(title, "membership-attack AUC")
        by_method = _by_key(members, lambda r: r.method)
        for method, mrows in sorted(by_method.items(), key=lambda kv: _method_rank(kv[1][0])):
            by_eps = _by_key(mrows, lambda r: _epsilon(r))
            order = sorted(by_eps, key=lambda e: position(float(e)))
            x = np.array([position(float(e)) for e in order])
            for metric, panel in panels.items():
                stats = [mean_std(metric_value(r, metric) for r in by_eps[e]) for e in order]
                panel.series.append(Series(base[method], x, np.array([st[0] for st in stats]), np.array([st[1] for st in stats])))
            for field, name in _ATTACK_FIELDS:
                stats = [mean_std(float(r.extra.get(field, math.nan)) for r in by_eps[e]) for e in order]
                if any(st[2] for st in stats):
                    pa.series.append(Series(f"{base[method]} {name}", x, np.array([st[0] for st in stats]),
                                            np.array([st[1] for st in stats])))  # fmt: skip
            for e in order:
                erows = by_eps[e]
                gap = mean_std(central[(r.dataset, r.alpha, r.seed)] - r.test_loglik for r in erows
                               if (r.dataset, r.alpha, r.seed) in central)  # fmt: skip
                cells = [
                    str(key["dataset"]), _join([key["alpha"]]), base[method], "∞" if math.isinf(float(e)) else f"{e:g}",
                    fmt_mean_std(*mean_std(r.test_loglik for r in erows)[:2]), fmt_mean_std(gap[0], gap[1]),
                ]
                if has_pr:
                    cells.append(fmt_mean_std(*mean_std(metric_value(r, "auc_pr") for r in erows)[:2], 3))
                for field, _ in _ATTACK_FIELDS:
                    st = mean_std(float(r.extra.get(field, math.nan)) for r in erows)
                    cells.append(fmt_mean_std(st[0], st[1], 3) if st[2] else DASH)
                body.append(cells)
        for r_metric, panel in panels.items():
            level = mean_std(metric_value(r, r_metric) for r in cell_central)
            if level[2]:
                panel.references.append(Series("Centralized", np.zeros(1), np.array([level[0]]), np.array([level[1]])))
        utility.append(panels["test_loglik"])
        if has_pr:
            utility.append(panels["auc_pr"])
        if pa.series:
            pa.references.append(Series("chance", np.zeros(1), np.array([0.5]), np.array([0.0])))
            attack.append(pa)
    labels = [("centralized", "Centralized")] + [(m, base[m]) for m in sorted(base, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99)]
    styles = {**plots.style_map(labels), "chance": Style("#444444", "")}
    attack_labels = [(m, f"{base[m]} {name}") for m, _ in labels[1:] for _, name in _ATTACK_FIELDS]
    attack_styles = {**plots.style_map([("attack", lab) for _, lab in attack_labels]), "chance": Style("#444444", "")}
    out = ["## Privacy: utility and membership attacks vs ε"]
    path = plots.plot_panels(utility, study.out_dir / "privacy_utility.png", styles=styles, xlabel="ε (record-level DP per client)",
                             xscale="log", ticks=ticks, ticklabels=names, title="Utility vs ε", ncols=2 if has_pr else 3)  # fmt: skip
    out.append(_figure_md(path, "Test log-likelihood (and AUC-PR) against the privacy budget ε; ∞: the non-private run; "
                                "dashed: centralized on raw rows; error bars: std over seeds."))  # fmt: skip
    if attack:
        path = plots.plot_panels(attack, study.out_dir / "privacy_attack.png", styles=attack_styles,
                                 xlabel="ε (record-level DP per client)", xscale="log", ticks=ticks, ticklabels=names,
                                 title="Membership-attack AUC vs ε", ncols=min(len(attack), 3))  # fmt: skip
        out.append(_figure_md(path, "Membership-inference AUC of the likelihood-threshold and density-ratio "
                                    "(DOMIAS) attacks on each upload (mean over clients) and on the global model; "
                                    "dashed: chance (0.5)."))  # fmt: skip
    headers = ["data", "α", "method", "ε", "test ll", "gap to centralized", *(["AUC-PR"] if has_pr else []),
               *(f"attack AUC: {name}" for _, name in _ATTACK_FIELDS)]  # fmt: skip
    out.append("Attack AUC: members are a client's own rows, non-members rows of the same distribution it never "
               "saw (0.5 = chance); uploads: mean over clients. Mean ± std over seeds.")  # fmt: skip
    out.append(md_table(headers, body, "lll" + "r" * (len(headers) - 3)))
    return "\n\n".join(out)


LABELS_BY_METHOD = {"fedgengmm": "FedGenGMM", "fedem": "Federated EM", "hybrid": "FedGenGMM + federated EM"}


def _by_key(rows: Iterable[ResultRow], key: Callable[[ResultRow], Any]) -> dict[Any, list[ResultRow]]:
    out: dict[Any, list[ResultRow]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def _reach_table(rows: list[ResultRow]) -> str:
    """Rounds and bytes federated EM needs to reach FedGenGMM's test log-likelihood, per cell and seed."""
    fedgen = {
        (r.dataset, r.alpha, r.contamination, r.seed): r.test_loglik
        for r in rows if r.method == "fedgengmm" and math.isfinite(r.test_loglik)
    }
    one_shot = {
        (r.dataset, r.alpha, r.contamination, r.seed): r.bytes_up + r.bytes_down
        for r in rows if r.method == "fedgengmm"
    }
    cells: dict[tuple[str, Any], list[tuple[int | None, int | None, int]]] = {}
    for r in rows:
        key = (r.dataset, r.alpha, r.contamination, r.seed)
        if r.method != "fedem" or not r.history or key not in fedgen:
            continue
        hit = next((p for p in r.history if p.test_loglik >= fedgen[key]), None)
        entry = (hit.round, hit.bytes_up + hit.bytes_down, one_shot[key]) if hit else (None, None, one_shot[key])
        cells.setdefault((r.dataset, r.alpha), []).append(entry)
    if not cells:
        return ""
    body = []
    for (dataset, alpha), entries in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        reached = [(e[0], e[1], e[2]) for e in entries if e[0] is not None and e[1] is not None]
        rounds = f"{np.mean([e[0] for e in reached]):.1f}" if reached else "—"
        nbytes = fmt_bytes(float(np.mean([e[1] for e in reached]))) if reached else "—"
        ratio = f"{np.mean([e[1] / max(e[2], 1) for e in reached]):.0f}×" if reached else "—"
        body.append([dataset, "—" if alpha is None else f"{alpha:g}", f"{len(reached)}/{len(entries)}", rounds, nbytes,
                     fmt_bytes(float(np.mean([e[2] for e in entries]))), ratio])
    return ("**Federated EM to FedGenGMM's quality**: the first round whose test log-likelihood reaches "
            "FedGenGMM's (same cell and seed); rounds and bytes count everything sent so far, preprocessing "
            "and initialisation included; seeds that never reach it are left out of the means.\n\n"
            + md_table(["dataset", "α", "seeds reaching it", "rounds", "bytes (up + down)", "FedGenGMM bytes",
                        "bytes ratio"], body, "llrrrrr"))


def _comm_panel(key: dict[str, Any], rows: list[ResultRow], varying: list[str]) -> CommPanel | None:
    panel = CommPanel(_describe(key, ["dataset", *varying]) if varying else key["dataset"])
    hybrids = [r for r in rows if r.method == "hybrid" and r.history]
    longest = max((r.max_rounds or 0 for r in hybrids), default=None)
    for label in _labels(rows):
        members = [r for r in rows if r.label == label]
        method = members[0].method
        if method == "fedem" or (method == "hybrid" and (members[0].max_rounds or 0) == longest):
            curve = _history_curve(label, members)
            if curve is not None:
                panel.curves.append(curve)
        elif method not in ("centralized", "hybrid") and all(r.rounds >= 1 for r in members):
            panel.points.append(_one_shot_point(label, members))
    central = [metric_value(r, "test_loglik") for r in rows if r.method == "centralized"]
    panel.centralized = mean_std(central)[0] if central else None
    return panel if panel.curves else None


def _history_curve(label: str, rows: list[ResultRow]) -> Curve | None:
    """Mean ± std over seeds of the history per round.

    A seed that stopped early (converged) keeps its last model, so its last point is
    carried forward; the curve then ends at the mean final quality of the table.
    """
    histories = [sorted(r.history, key=lambda p: p.round) for r in rows if r.history]
    if not histories:
        return None
    rounds = sorted({p.round for h in histories for p in h})
    tests, nbytes = [], []
    for r in rounds:
        points = [_at_round(h, r) for h in histories]
        tests.append([math.nan if p.test_loglik is None else float(p.test_loglik) for p in points])
        nbytes.append(float(np.mean([p.bytes_up + p.bytes_down for p in points])))
    stats = [mean_std(t) for t in tests]
    return Curve(label, np.array(rounds, dtype=float), np.array(nbytes),
                 np.array([st[0] for st in stats]), np.array([st[1] for st in stats]))


def _at_round(history: list[RoundPoint], r: int) -> RoundPoint:
    """The last point at or before round ``r`` (the first point if none)."""
    before = [p for p in history if p.round <= r]
    return before[-1] if before else history[0]


def _one_shot_point(label: str, rows: list[ResultRow]) -> Curve:
    mean, std, _ = mean_std(metric_value(r, "test_loglik") for r in rows)
    return Curve(
        label, np.array([float(np.mean([r.rounds for r in rows]))]),
        np.array([float(np.mean([r.bytes_up + r.bytes_down for r in rows]))]),
        np.array([mean]), np.array([std]),
    )


def _comm_table(rows: list[ResultRow]) -> str:
    body = []
    for s in summarize(sorted(rows, key=lambda r: (r.dataset, *_method_rank(r))), ["dataset", "label"]):
        total = s["bytes_up_mean"] + s["bytes_down_mean"]
        body.append([
            s["dataset"], s["label"], fmt_count(s["rounds_mean"], s["rounds_std"]),
            fmt_bytes(s["bytes_up_mean"], s["bytes_up_std"]), fmt_bytes(s["bytes_down_mean"], s["bytes_down_std"]),
            fmt_bytes(total), fmt_mean_std(s["wall_seconds_mean"], s["wall_seconds_std"], 2) + " s",
        ])
    return ("**Rounds, bytes and time per method** (pooled over the cells of the main grid and over seeds; "
            "bytes up = client→server, down = server→client)\n\n"
            + md_table(["dataset", "method", "rounds", "bytes up", "bytes down", "bytes total", "wall time"], body, "llrrrrr"))


def _setting_sweep_section(study: _Study, name: str, heading: str, xlabel: str, file: str, metrics: Sequence[str]) -> str:
    """A sweep of one setting (local K, synthetic size, contamination): plot and tables, or ''."""
    values = study.swept(name)
    if len(values) < 2:
        return ""
    rows = study.main_rows(free=name)
    groups = _group(rows, [f for f in BASE_FIELDS if f != name])
    if name == "local_components":
        cats = sorted(values, key=_parse_k)
        position: Callable[[Any], float] = lambda v: float(cats.index(v))  # noqa: E731
        scale, ticks, names = "linear", [float(i) for i in range(len(cats))], [str(c) for c in cats]
    else:
        position = float
        scale, ticks, names = _numeric_axis(values)
    sweeps = [_sweep(groups, lambda r: setting(r, name), position, lambda v: f"{v:g}" if isinstance(v, float) else str(v), m)
              for m in metrics]
    sweeps = [s for s in sweeps if s.panels]
    if not sweeps:
        return ""
    panels = [p for s in sweeps for p in s.panels]
    path = plots.plot_panels(
        panels, study.out_dir / f"{file}.png", styles=study.styles, xlabel=xlabel, xscale=scale,
        ticks=ticks, ticklabels=names, title=heading, ncols=min(len(sweeps[0].panels), 3),
    )
    caption = f"{heading}; error bars: std over seeds; dashed: methods that do not use this setting."
    return "\n\n".join([f"## {heading}", _figure_md(path, caption), *(s.table for s in sweeps)])


def _hybrid_section(study: _Study) -> str:
    rows = [r for r in study.main_rows(free="hybrid_rounds") if r.method in ("hybrid", "fedgengmm", "fedem", "centralized")]
    groups = [(k, m) for k, m in _group(rows, BASE_FIELDS)
              if len({r.max_rounds for r in m if r.method == "hybrid"}) >= 2]

    def x_of(row: ResultRow) -> Any:
        return row.max_rounds if row.method == "hybrid" else 0 if row.method == "fedgengmm" else None

    def label_of(row: ResultRow) -> str:
        return _HYBRID_SERIES if row.method in ("hybrid", "fedgengmm") else row.label

    sweep = _sweep(groups, x_of, float, lambda v: f"{v}", "test_loglik", label_of)
    if not sweep.panels:
        return ""
    xs = sorted({float(x) for p in sweep.panels for s in p.series for x in s.x})
    path = plots.plot_panels(
        sweep.panels, study.out_dir / "hybrid_rounds.png", styles=study.styles,
        xlabel="EM rounds after FedGenGMM (0 = FedGenGMM alone)", ticks=xs,
        ticklabels=[f"{x:g}" for x in xs], title="Hybrid: refining FedGenGMM with federated EM rounds",
    )
    return "\n\n".join([
        "## Hybrid refinement", _figure_md(path, "Test log-likelihood after r federated EM rounds started "
                                                 "from FedGenGMM; dashed: federated EM from k-means++ and centralized."),
        sweep.table,
    ])


def _density_section(study: _Study, models_dir: Path) -> str:
    figures, skipped = density_figures(Path(models_dir), study.out_dir)
    if not figures and not skipped:
        return ""
    out = ["## Density contours"]
    out += [_figure_md(path, caption) for path, caption in figures]
    if skipped:
        out.append("Not drawn: " + "; ".join(skipped) + ".")
    return "\n\n".join(out)


def density_figures(models_dir: Path, out_dir: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """Density-contour PNGs of the 2-D models saved under ``models_dir``.

    Layout: ``models_dir`` itself and each of its sub-folders is one scene. A scene holds
    model files written by :func:`fedgmm.model_io.save_mixture` (``*.npz``) and, optionally,
    ``clients.npz``: plain arrays of shape ``(n_c, 2)``, one per client, in name order
    (:func:`numpy.savez` ``arr_0``, ``arr_1``, … or ``client_0``, …). Files named
    ``local_<i>.npz`` form the ``local`` panel (client ``i``'s model); every other file is a
    panel titled by its metadata ``extra["label"]`` or its file name.

    Returns
    -------
    figures : list of (Path, str)
        PNG written (``out_dir/density_<scene>.png``) and its caption.
    skipped : list of str
        Scenes not drawn, with the reason (not 2-D, unreadable file).
    """
    figures: list[tuple[Path, str]] = []
    skipped: list[str] = []
    scenes = [models_dir, *sorted(p for p in models_dir.iterdir() if p.is_dir())] if models_dir.is_dir() else []
    for scene in scenes:
        name = "models" if scene == models_dir else scene.name
        try:
            models, clients = _load_scene(scene)
        except (OSError, ValueError) as exc:
            skipped.append(f"{name} ({exc})")
            continue
        if not models:
            continue
        try:
            path = plots.plot_density_contours(clients, models, out_dir / f"density_{_slug(name)}.png", title=name)
        except ValueError as exc:
            skipped.append(f"{name} ({exc})")
            continue
        figures.append((path, f"{name}: log-density contours (10/25/50/75/90 % data quantiles) over the clients' points."))
    return figures, skipped


def _load_scene(scene: Path) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Models (panel title → state or list of local states) and client arrays of one scene."""
    from fedgmm.model_io import load_mixture

    local: dict[int, Any] = {}
    named: list[tuple[tuple[int, str], str, Any]] = []
    for path in sorted(scene.glob("*.npz")):
        if path.name == "clients.npz":
            continue
        state, meta = load_mixture(path)
        match = re.fullmatch(r"local[_-]?(\d+)", path.stem)
        if match:
            local[int(match.group(1))] = state
            continue
        extra = meta.get("extra") or {}
        method = str(extra.get("method", path.stem))
        rank = next((i for i, m in enumerate(_DENSITY_ORDER) if method.startswith(m)), len(_DENSITY_ORDER))
        named.append(((rank, path.stem), str(extra.get("label", path.stem)), state))
    models: dict[str, Any] = {"local": [local[i] for i in sorted(local)]} if local else {}
    models.update({title: state for _, title, state in sorted(named, key=lambda t: t[0])})
    clients: list[np.ndarray] = []
    if (scene / "clients.npz").exists():
        with np.load(scene / "clients.npz", allow_pickle=False) as z:
            clients = [np.asarray(z[k], dtype=np.float64) for k in sorted(z.files, key=_natural)]
    return models, clients


def _natural(text: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


_DENSITY_ORDER = ("local", "union", "fedgengmm", "hybrid", "fedem", "centralized")


def _appendix(study: _Study) -> str:
    fields = [f for f in (*BASE_FIELDS, "n_components", "local_components", "synthetic_size", "max_rounds")
              if len({repr(getattr(r, f)) for r in study.rows}) > 1]
    base = [f for f in fields if f in BASE_FIELDS]
    rest = [f for f in fields if f not in BASE_FIELDS]
    rows = sorted(study.rows, key=lambda r: ([_sort_key(getattr(r, f)) for f in base], _method_rank(r),
                                             [_sort_key(getattr(r, f)) for f in rest]))
    body = []
    for s in summarize(rows, [*fields, "label"]):
        body.append([
            *(_join([s[f]]) for f in fields), s["label"], str(s["n"]),
            fmt_mean_std(s["test_loglik_mean"], s["test_loglik_std"], 2, s["test_loglik_n"], s["n"]),
            fmt_mean_std(s["auc_pr_mean"], s["auc_pr_std"], 3), fmt_count(s["rounds_mean"], s["rounds_std"]),
            fmt_bytes(s["bytes_up_mean"] + s["bytes_down_mean"]),
        ])
    headers = [*("α" if f == "alpha" else f.replace("_", " ") for f in fields), "method", "seeds", "test log-lik. (nats/sample)",
               "AUC-PR", "rounds", "bytes total"]
    return "## All cells\n\n" + md_table(headers, body, "l" * (len(fields) + 1) + "rrrrr")


# --------------------------------------------------------------------------- entry point


def write_report(
    results_path: Path,
    out_dir: Path,
    *,
    title: str | None = None,
    models_dir: Path | None = None,
    skip_bad: bool = False,
) -> Path:
    """Write ``out_dir/report.md`` and its PNG plots from a results file.

    Parameters
    ----------
    results_path : Path
        A ``results.jsonl`` written by the study runner.
    out_dir : Path
        Created if needed; earlier plots of this module in it are replaced.
    title : str, optional
        Report title (default: ``"Study report: <study>"``).
    models_dir : Path, optional
        Saved 2-D models to draw as density contours (layout: see
        :func:`density_figures`).
    skip_bad : bool
        Leave out unreadable lines instead of raising (see :func:`read_rows`).

    Returns
    -------
    path : Path
        The ``report.md`` written.

    Raises
    ------
    ValueError
        If the results file has a malformed line (see :func:`read_rows`).
    """
    results_path, out_dir = Path(results_path), Path(out_dir)
    read = list(read_rows(results_path, skip_bad=skip_bad))
    rows = dedupe(read)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_old_plots(out_dir)
    report = out_dir / "report.md"
    if not rows:
        report.write_text(f"# {title or 'Study report'}\n\n`{results_path.name}` holds no result rows yet.\n", encoding="utf-8")
        return report
    study = _Study.from_rows(rows, out_dir)
    title = title or f"Study report: {_join(r.study for r in rows)}"
    sections = [
        _header(study, results_path, title, len(read)),
        _loglik_section(study),
        _auc_section(study),
        _communication_section(study),
        _setting_sweep_section(study, "local_components", "Quality vs the clients' local K",
                               "local K setting (fixed K, or BIC range)", "loglik_vs_local_k", ["test_loglik"]),
        _setting_sweep_section(study, "n_components", "Quality vs global K",
                               "global number of components K", "loglik_vs_global_k", ["test_loglik"]),
        _setting_sweep_section(study, "synthetic_size", "Quality vs synthetic-set size",
                               "synthetic-set size (× Σn_c, or rows)", "loglik_vs_synthetic_size", ["test_loglik"]),
        _hybrid_section(study),
        _leakage_section(study),
        _privacy_section(study),
        _setting_sweep_section(study, "contamination", "Robustness to contaminated clients",
                               "fraction of contaminated clients", "robustness_contamination", ["test_loglik", "auc_pr"]),
        _density_section(study, models_dir) if models_dir is not None else "",
        _appendix(study),
    ]
    report.write_text("\n\n".join(s for s in sections if s) + "\n", encoding="utf-8")
    return report


def _clear_old_plots(out_dir: Path) -> None:
    """Remove PNGs an earlier report wrote here, so no stale plot survives a re-run."""
    for pattern in _OUR_PNGS:
        for path in out_dir.glob(f"{pattern}.png"):
            path.unlink()
