"""Figure helpers the notebooks call (plotly for charts, matplotlib for brain slices and the
site-calibration curve, which ``benchmarks/bench_calibrate.py`` also saves as a PNG: plotly
writes static images only through ``kaleido``, which is no dependency of the project).

Every figure of the book is made here, so that one style holds across it: one colour per model
(:data:`MODEL_COLOURS`) and per group (:data:`GROUP_COLOURS`), facet labels without
plotly's ``column=value`` prefix, axis labels with units, and no figure title (the book's
numbered caption says what is shown). A notebook makes a figure, then calls
:func:`glue_figure`; a ``{glue:figure}`` directive in a markdown cell places it with its
numbered caption.

Plotly figures are glued through :class:`PlotlyFigure`, which emits the figure as an HTML
``<div>`` without plotly.js. The book serves one copy of plotly.js from its ``_static`` folder,
so pages draw offline and stay small. (Plotly's default Jupyter renderer emits a mime type the
Sphinx build drops; its ``notebook`` renderer inlines 4.8 MB of plotly.js per figure; its
``notebook_connected`` renderer loads plotly.js from a CDN.) In JupyterLab the figure's own
plotly mime type is offered too, so figures also draw when a notebook is run by hand.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainage.data.cohort import open_image
from brainage.inference.qc_figures import label_orientation, ortho_montage, panel_widths
from brainage.study.tables import CURVE_METHOD_NAMES, SCORE_NAMES, p_text

__all__ = [
    "GROUP_COLOURS",
    "MODEL_COLOURS",
    "MODEL_LABELS",
    "PlotlyFigure",
    "age_histogram",
    "alignment_strip",
    "attribution_montage",
    "attribution_sums",
    "attribution_viewer",
    "bland_altman",
    "calibration_curve",
    "error_by_age",
    "example_slices",
    "gap_against_age",
    "gap_by_group",
    "glue_figure",
    "masked_map",
    "model_colour",
    "predicted_against_age",
    "region_attribution",
    "severity_residuals",
    "show",
    "split_ages",
    "tissue_by_age",
    "tiv_by_age",
    "training_curves",
    "training_loss",
]

#: One colour per model across the book (Okabe-Ito, distinguishable with colour-blindness).
MODEL_COLOURS: dict[str, str] = {"rnc": "#0072B2", "l1": "#D55E00", "permuted": "#7F7F7F"}
#: How each model is named in figures.
MODEL_LABELS: dict[str, str] = {"rnc": "RNC", "l1": "L1", "permuted": "permuted-age control"}
#: One colour per diagnostic group across the book.
GROUP_COLOURS: dict[str, str] = {"HC": "#009E73", "AD": "#CC79A7", "PD": "#E69F00"}
GROUP_ORDER = ["HC", "AD", "PD"]
#: Training stages (``brainage.models.train``) as figures name them.
STAGE_LABELS: dict[str, str] = {"rnc_encoder": "RNC stage 1: encoder (ridge probe)",
                                "rnc_head": "RNC stage 2: linear head", "l1": "L1: end to end"}
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=40, b=50), title=None)


class PlotlyFigure:
    """A plotly figure with an offline-friendly rich display.

    Parameters
    ----------
    figure : plotly.graph_objects.Figure
        The figure to display.
    """

    def __init__(self, figure: Any) -> None:
        self.figure = figure

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        html = self.figure.to_html(full_html=False, include_plotlyjs=False,
                                   config={"displaylogo": False, "responsive": True})
        return {
            "text/html": html,
            "application/vnd.plotly.v1+json": json.loads(self.figure.to_json()),
            "text/plain": f"<plotly figure: {self.figure.layout.title.text or 'untitled'}>",
        }


def show(figure: Any) -> None:
    """Display a plotly figure in a notebook and in the offline book (also inside loops)."""
    from IPython.display import display

    display(PlotlyFigure(figure))


def glue_figure(name: str, figure: Any) -> None:
    """Glue a figure for a ``{glue:figure}`` directive (myst-nb) without displaying it here.

    Plotly figures are glued as :class:`PlotlyFigure` (drawn offline by the book's plotly.js);
    matplotlib figures as PNG, and closed so that the notebook does not show them a second
    time; anything else (a nilearn viewer) as it displays itself.

    Parameters
    ----------
    name : str
        The glue key, also the figure's ``:name:`` (``fig-<notebook>-<what>``).
    figure : plotly Figure, matplotlib Figure or displayable object
    """
    from myst_nb import glue

    if not name.startswith("fig-"):
        raise ValueError(f"figure glue keys start with 'fig-' (fig-<notebook>-<what>); "
                         f"got {name!r}")
    if _is_plotly(figure):
        glue(name, PlotlyFigure(figure), display=False)
        return
    glue(name, figure, display=False)
    if _is_matplotlib(figure):
        import matplotlib.pyplot as plt

        plt.close(figure)


def _is_plotly(figure: Any) -> bool:
    return type(figure).__module__.startswith("plotly.")


def _is_matplotlib(figure: Any) -> bool:
    return type(figure).__module__.startswith("matplotlib.")


# --- colours and labels --------------------------------------------------------------------


def model_colour(name: str) -> str:
    """The colour of a model (any case: ``"rnc"``, ``"RNC"``, ``"PERMUTED"``)."""
    key = str(name).lower()
    if key not in MODEL_COLOURS:
        raise ValueError(f"unknown model {name!r}; figures know {sorted(MODEL_COLOURS)}")
    return MODEL_COLOURS[key]


def _model_label(name: str) -> str:
    model_colour(name)  # validates
    return MODEL_LABELS[str(name).lower()]


def _labelled_models(frame: pd.DataFrame, column: str = "model") -> tuple[pd.DataFrame, dict]:
    """``frame`` with its models named as figures name them, and the colour of each name."""
    out = frame.copy()
    out[column] = out[column].map(_model_label)
    order = [MODEL_LABELS[k] for k in MODEL_COLOURS if MODEL_LABELS[k] in set(out[column])]
    return out, {"color_discrete_map": {MODEL_LABELS[k]: c for k, c in MODEL_COLOURS.items()},
                 "category_orders": {column: order}}


def _group_style(frame: pd.DataFrame, column: str = "group") -> dict:
    """Group colours and order (HC, AD, PD), and sites in sorted order where there are any."""
    order = [g for g in GROUP_ORDER if g in set(frame[column])]
    order += sorted(set(frame[column].dropna()) - set(order))
    orders = {column: order}
    if "site" in frame.columns:
        orders["site"] = sorted(frame["site"].dropna().astype(str).unique())
    return {"color_discrete_map": GROUP_COLOURS, "category_orders": orders}


def _finish(fig: Any, **layout: Any) -> Any:
    """The book's layout: no title (the caption has it)."""
    fig.update_layout(**{**_LAYOUT, **layout})
    return fig


def _facet_labels(fig: Any) -> Any:
    """Facet labels without plotly express's ``column=`` prefix (call before other notes)."""
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    return fig


# --- 01 data audit ---------------------------------------------------------------------------


def alignment_strip(table: pd.DataFrame, threshold: float) -> Any:
    """Registration QC figure (outline misfit, mm) of each preprocessed scan by site, one
    colour per group; dashed: the threshold (scans above it fail)."""
    import plotly.express as px

    fig = px.strip(table, x="site", y="registration_misfit_mm", color="group",
                   hover_name="participant_id",
                   labels={"registration_misfit_mm": "registration misfit (mm; lower is better)",
                           "site": "site", "group": "group"}, **_group_style(table))
    fig.add_hline(y=threshold, line_dash="dash", annotation_text=f"threshold {threshold:g} mm",
                  annotation_position="bottom right")
    return _finish(fig)


def tiv_by_age(table: pd.DataFrame) -> Any:
    """Total intracranial volume (cm³) of each extracted brain mask against age, by sex."""
    import plotly.express as px

    fig = px.scatter(table, x="age", y="tiv_cm3", color="sex", hover_name="participant_id",
                     labels={"tiv_cm3": "TIV (cm³)", "age": "age (years)"})
    return _finish(fig)


def tissue_by_age(tissue: pd.DataFrame) -> Any:
    """CSF and grey-matter fractions against age, one panel each, own y axis with ticks."""
    import plotly.express as px

    names = {"csf_fraction": "CSF", "gm_fraction": "grey matter"}
    long = tissue.melt(id_vars=["participant_id", "age", "group"], value_vars=list(names),
                       var_name="tissue", value_name="fraction").assign(
        tissue=lambda d: d["tissue"].map(names))
    fig = px.scatter(long, x="age", y="fraction", color="group", facet_col="tissue",
                     trendline="lowess", hover_name="participant_id",
                     labels={"age": "age (years)", "fraction": "fraction of brain voxels"},
                     facet_col_spacing=0.08,
                     **_merge(_group_style(long), {"category_orders": {"tissue": list(
                         names.values())}}))
    _facet_labels(fig)
    fig.update_yaxes(matches=None, showticklabels=True)
    return _finish(fig)


def _merge(a: dict, b: dict) -> dict:
    """Two plotly-express style dicts merged (their ``category_orders`` united)."""
    return {**a, **b, "category_orders": {**a.get("category_orders", {}),
                                          **b.get("category_orders", {})}}


def age_histogram(table: pd.DataFrame, *, max_sites: int = 6) -> Any:
    """Age distribution by group, one row per site (when there are at most ``max_sites``)."""
    import plotly.express as px

    by_site = table["site"].nunique() <= max_sites
    fig = px.histogram(table, x="age", color="group", facet_row="site" if by_site else None,
                       nbins=20, barmode="overlay", opacity=0.7,
                       labels={"age": "age (years)", "count": "scans"}, **_group_style(table))
    _facet_labels(fig)
    fig.update_yaxes(title_text="scans")
    return _finish(fig, height=max(300, 170 * table["site"].nunique()) if by_site else 350)


def split_ages(merged: pd.DataFrame) -> Any:
    """Age by split (training, validation, test, patients)."""
    import plotly.express as px

    order = [s for s in ("train", "val", "test", "external_test", "clinical")
             if s in set(merged["split"])]
    fig = px.box(merged, x="split", y="age", color="split", points="all",
                 hover_name="participant_id", category_orders={"split": order},
                 labels={"age": "age (years)", "split": "split"})
    return _finish(fig, showlegend=False)


# --- 02 training -----------------------------------------------------------------------------


def _staged(history: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    frame, style = _labelled_models(history)
    frame["stage"] = frame["stage"].map(lambda s: STAGE_LABELS.get(s, s))
    order = [STAGE_LABELS.get(s, s) for s in dict.fromkeys(history["stage"])]
    return frame, _merge(style, {"category_orders": {"stage": order}})


def training_curves(history: pd.DataFrame, mean_age_mae: float) -> Any:
    """Validation MAE by epoch: one colour per model, one dash per stage."""
    import plotly.express as px

    frame, style = _staged(history)
    fig = px.line(frame, x="epoch", y="val_mae", color="model", line_dash="stage", markers=True,
                  labels={"val_mae": "validation MAE (years)", "epoch": "epoch"}, **style)
    _stage_names(fig)
    fig.add_hline(y=mean_age_mae, line_dash="dot", line_color="grey",
                  annotation_text=f"mean-age predictor {mean_age_mae:.2f} years",
                  annotation_position="top right")
    return _finish(fig, legend=dict(orientation="h", y=-0.25))


def training_loss(history: pd.DataFrame) -> Any:
    """Training loss by epoch, one panel per stage, each on its own epoch and loss axes.

    The stages run for different numbers of epochs (the RNC head's 100 against the encoder's
    15 in the quick profile): on one shared epoch axis the short stages were squeezed into its
    first tenth.
    """
    import plotly.express as px

    frame, style = _staged(history)
    fig = px.line(frame, x="epoch", y="train_loss", color="model", facet_col="stage",
                  markers=True, facet_col_spacing=0.07,
                  labels={"train_loss": "training loss", "epoch": "epoch"}, **style)
    _facet_labels(fig)
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(matches=None, showticklabels=True)
    return _finish(fig)


def _stage_names(fig: Any) -> None:
    """Legend entries named by stage alone (each stage's label names its model)."""
    fig.for_each_trace(lambda t: t.update(name=t.name.split(", ", 1)[-1]))
    fig.update_layout(legend_title_text="stage")


# --- 03 evaluation ---------------------------------------------------------------------------


def predicted_against_age(test: pd.DataFrame, *, intervals: bool = False) -> Any:
    """Predicted against chronological age, one panel per model, with the identity line.

    With ``intervals``, each point carries its interval (``age_lower`` to ``age_upper``).
    """
    import plotly.express as px
    import plotly.graph_objects as go

    frame, style = _labelled_models(test)
    extra = {}
    if intervals:
        frame = frame.assign(plus=frame["age_upper"] - frame["predicted"],
                             minus=frame["predicted"] - frame["age_lower"])
        extra = {"error_y": "plus", "error_y_minus": "minus"}
    fig = px.scatter(frame, x="age", y="predicted", color="model", facet_col="model",
                     hover_name="participant_id", **extra, **style,
                     labels={"age": "chronological age (years)",
                             "predicted": "predicted age (years)"})
    _facet_labels(fig)
    lo, hi = float(test["age"].min()), float(test["age"].max())
    for col in range(1, len(style["category_orders"]["model"]) + 1):
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="identity",
                                 line=dict(dash="dash", color="grey"), showlegend=col == 1),
                      row=1, col=col)
    return _finish(fig)


def error_by_age(by_bin: pd.DataFrame, confidence: float = 0.95) -> Any:
    """Test MAE per age bin and model, with its bootstrap CI and the bin's n on each bar.

    ``by_bin`` is :func:`brainage.analysis.metrics.error_by_age_bin` with ``n_boot`` (columns
    ``mae_ci_low``, ``mae_ci_high``) and a ``model`` column; bins without scans are left out.
    """
    import plotly.express as px

    missing = {"mae_ci_low", "mae_ci_high", "n", "model"} - set(by_bin.columns)
    if missing:
        raise ValueError(f"by_bin lacks columns {sorted(missing)} (error_by_age_bin with n_boot)")
    frame, style = _labelled_models(by_bin[by_bin["n"] > 0])
    frame = frame.assign(plus=frame["mae_ci_high"] - frame["mae"],
                         minus=frame["mae"] - frame["mae_ci_low"],
                         label=frame["n"].map(lambda n: f"n={n}"))
    fig = px.bar(frame, x="age_bin", y="mae", color="model", barmode="group", text="label",
                 error_y="plus", error_y_minus="minus",
                 hover_data=["n", "mae_ci_low", "mae_ci_high"], **style,
                 labels={"mae": f"MAE (years), {confidence:.0%} CI", "age_bin": "age bin (years)"})
    fig.update_traces(textposition="inside", insidetextanchor="start")
    return _finish(fig)


def gap_against_age(test: pd.DataFrame) -> Any:
    """Test gap against age before and after correction, with a least-squares line per model."""
    import plotly.express as px

    long = pd.concat([test.assign(kind="raw gap", value=test["gap"]),
                      test.assign(kind="bias-corrected gap", value=test["corrected_gap"])])
    frame, style = _labelled_models(long)
    fig = px.scatter(frame, x="age", y="value", color="model", facet_col="kind",
                     trendline="ols", hover_name="participant_id",
                     **_merge(style, {"category_orders": {"kind": ["raw gap",
                                                                   "bias-corrected gap"]}}),
                     labels={"value": "brain-age gap (years)", "age": "chronological age (years)"})
    _facet_labels(fig)
    fig.add_hline(y=0, line_color="grey", line_width=1)
    return _finish(fig)


def bland_altman(test: pd.DataFrame) -> Any:
    """Bland-Altman plot: gap against the mean of predicted and chronological age.

    One panel per model, so that each model's mean gap and 95 % limits of agreement
    (mean ± 1.96 SD) are drawn and labelled in its own panel.
    """
    import plotly.express as px

    frame, style = _labelled_models(test.assign(mean_age=(test["predicted"] + test["age"]) / 2))
    fig = px.scatter(frame, x="mean_age", y="gap", color="model", facet_col="model",
                     hover_name="participant_id", **style,
                     labels={"mean_age": "(predicted + chronological age) / 2 (years)",
                             "gap": "gap: predicted - chronological age (years)"})
    _facet_labels(fig)
    for col, name in enumerate(style["category_orders"]["model"], start=1):
        gaps = frame.loc[frame["model"] == name, "gap"]
        mean, sd = float(gaps.mean()), float(gaps.std())
        colour = style["color_discrete_map"][name]
        for y, dash, text, where in ((mean, "solid", f"mean {mean:+.1f}", "top left"),
                                     (mean + 1.96 * sd, "dot", f"+1.96 SD {mean + 1.96 * sd:+.1f}",
                                      "top right"),
                                     (mean - 1.96 * sd, "dot", f"-1.96 SD {mean - 1.96 * sd:+.1f}",
                                      "bottom right")):
            fig.add_hline(y=y, line_dash=dash, line_color=colour, annotation_text=text,
                          annotation_position=where, annotation_font_size=11, row=1, col=col)
    return _finish(fig, showlegend=False)


def retest_bland_altman(pairs: pd.DataFrame, measure: str = "corrected_gap") -> Any:
    """Bland-Altman plot of scan and rescan: the difference (rescan - first scan) against
    their mean, one column per comparison (within site, across sites), one colour per model,
    each model's mean difference (solid) and 95 % limits of agreement (dotted)."""
    import plotly.express as px

    rows = pairs[pairs["measure"] == measure]
    frame, style = _labelled_models(rows.assign(mean=(rows["first"] + rows["second"]) / 2,
                                                difference=rows["second"] - rows["first"]))
    order = list(dict.fromkeys(frame["comparison"]))
    what = "bias-corrected gap" if measure == "corrected_gap" else measure.replace("_", " ")
    style["category_orders"] = {**style["category_orders"], "comparison": order}
    fig = px.scatter(frame, x="mean", y="difference", color="model", facet_col="comparison",
                     hover_name="participant_id", **style,
                     labels={"mean": f"mean of the two scans' {what} (years)",
                             "difference": f"rescan - first scan, {what} (years)"})
    _facet_labels(fig)
    for col, comparison in enumerate(order, start=1):
        for name in style["category_orders"]["model"]:
            d = frame.loc[(frame["comparison"] == comparison) & (frame["model"] == name),
                          "difference"]
            if len(d) < 2:
                continue
            mean, sd = float(d.mean()), float(d.std())
            colour = style["color_discrete_map"][name]
            for y, dash in ((mean, "solid"), (mean + 1.96 * sd, "dot"),
                            (mean - 1.96 * sd, "dot")):
                fig.add_hline(y=y, line_dash=dash, line_color=colour, row=1, col=col)
    return _finish(fig)


#: Line style of each method of :func:`brainage.analysis.site_calibration.calibration_curve`
#: in :func:`calibration_curve` (``"site, own slope"``: in the tables only).
CURVE_STYLES: dict[str, str] = {"none": ":", "refit": "--", "site": "-", "mean age": "-."}


def calibration_curve(table: pd.DataFrame, *, level: float = 0.9,
                      goal: tuple[float, float] = (0.85, 0.95)) -> Any:
    """MAE and interval coverage on a site's other scans against the number k of its scans
    a model was calibrated on: one colour per model, one line style per method.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`brainage.analysis.site_calibration.calibration_curve` tables with a ``model``
        column (``k``, ``method``, ``mae``, ``coverage``, ``coverage_p10``, ``coverage_p90``).
    level : float, default=0.9
        Nominal coverage (a grey line).
    goal : tuple of float, default=(0.85, 0.95)
        Coverage band drawn as the goal (shaded).

    Returns
    -------
    matplotlib.figure.Figure
        Left: MAE (log scale: a refit that divides by a near-zero slope reaches hundreds of
        years); right: coverage, with the site calibration's 10th-90th percentiles over splits
        as a band.
    """
    import matplotlib.pyplot as plt

    missing = {"model", "k", "method", "splits", "mae", "coverage", "coverage_p10",
               "coverage_p90"} - set(table.columns)
    if missing:
        raise ValueError(f"calibration_curve needs the columns {sorted(missing)} "
                         f"(calibration_curve tables with a model column)")
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 4.4), layout="constrained")
    shown = table[table["method"].isin(CURVE_STYLES) & (table["splits"] > 0)]
    first = shown["model"].iloc[0] if len(shown) else None
    for (model, method), rows in shown.groupby(["model", "method"], sort=False):
        if method == "mean age" and model != first:
            continue  # the same for every model (it reads no prediction)
        style, name = CURVE_STYLES[method], CURVE_METHOD_NAMES[method]
        colour, label = (("0.35", f"{name} (no model)") if method == "mean age"
                         else (model_colour(model), f"{_model_label(model)}: {name}"))
        rows = rows.sort_values("k")
        for ax, column in zip(axes, ("mae", "coverage")):
            ax.plot(rows["k"], rows[column], style, color=colour, marker="o", ms=4, label=label)
        if method == "site":
            axes[1].fill_between(rows["k"], rows["coverage_p10"], rows["coverage_p90"],
                                 color=colour, alpha=0.12, lw=0)
    ks = sorted(shown["k"].unique())
    axes[0].set_yscale("log")
    axes[1].axhspan(*goal, color="0.88", zorder=0, label=f"goal {goal[0]:g}-{goal[1]:g}")
    axes[1].axhline(level, color="0.5", lw=0.8)
    axes[0].set(xlabel="calibration scans k", ylabel="MAE on the other scans (years)", xticks=ks)
    axes[1].set(xlabel="calibration scans k", ylabel=f"coverage of the {level:.0%} interval",
                xticks=ks, ylim=(-0.02, 1.02))
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=3, frameon=False)
    return fig


# --- 04 interpretability ---------------------------------------------------------------------


def attribution_sums(checks: pd.DataFrame) -> Any:
    """Sum of each map's attributions against the prediction's offset from the reference's.

    Completeness of integrated gradients puts every point on the identity line (drawn).
    """
    import plotly.express as px

    frame, style = _labelled_models(checks.assign(
        offset=checks["predicted"] - checks["baseline_predicted"]))
    fig = px.scatter(frame, x="offset", y="attribution_sum", color="model",
                     hover_name="participant_id", **style,
                     labels={"offset": "predicted age - reference's predicted age (years)",
                             "attribution_sum": "sum of attributions (years)"})
    lo = float(min(frame["offset"].min(), frame["attribution_sum"].min()))
    hi = float(max(frame["offset"].max(), frame["attribution_sum"].max()))
    fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(dash="dash", color="grey"))
    return _finish(fig)


def region_attribution(table: pd.DataFrame) -> Any:
    """Mean |attribution| per region and model (``region_summary`` rows with ``model``)."""
    import plotly.express as px

    frame, style = _labelled_models(table)
    frame["region"] = frame["region"].str.replace("_", " ")
    fig = px.bar(frame, x="region", y="mean_abs", color="model", barmode="group", **style,
                 labels={"mean_abs": "mean |attribution| (scaled, no unit)", "region": "region"})
    return _finish(fig, legend=dict(orientation="h", y=1.02, yanchor="bottom"))


# --- 05 clinical -----------------------------------------------------------------------------


def gap_by_group(analysed: pd.DataFrame) -> Any:
    """Bias-corrected gap by group, one colour per model (violins with box and points)."""
    import plotly.express as px

    frame, style = _labelled_models(analysed)
    fig = px.violin(frame, x="group", y="corrected_gap", color="model", box=True, points="all",
                    hover_name="participant_id",
                    **_merge(style, {"category_orders": {"group": [
                        g for g in GROUP_ORDER if g in set(frame["group"])]}}),
                    labels={"corrected_gap": "bias-corrected gap (years)", "group": "group"})
    fig.add_hline(y=0, line_color="grey", line_width=1)
    return _finish(fig)


def severity_residuals(residuals: Mapping[tuple[str, str, str], pd.DataFrame],
                       correlations: pd.DataFrame) -> Any:
    """The partial Spearman correlations that were tested, as rank-residual scatters.

    One row per (group, score) test and one column per model. Each panel plots the gap's rank
    residual against the score's (both after the covariates' ranks are regressed out,
    :func:`brainage.analysis.clinical.partial_rank_residuals`), whose correlation is the partial
    rho; the line is their least-squares fit. Each panel's title gives rho, the uncorrected p,
    the Benjamini-Hochberg p (p_FDR) over the clinical family, and n.

    Parameters
    ----------
    residuals : mapping of (model, group, score) to DataFrame
        ``gap_residual`` and ``score_residual`` per subject (empty where not estimable).
    correlations : DataFrame
        ``ClinicalResults.correlations``: ``model``, ``group``, ``score``, ``n``, ``rho``, ``p``,
        ``p_fdr``, ``estimable``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not residuals:
        raise ValueError("severity_residuals needs at least one (model, group, score) entry")
    models = list(dict.fromkeys(m for m, _, _ in residuals))
    tests = list(dict.fromkeys((g, s) for _, g, s in residuals))
    stats = correlations.set_index(["model", "group", "score"])
    titles = []
    for group, score in tests:
        for model in models:
            row = stats.loc[(model, group, score)]
            head = f"{group}, {SCORE_NAMES.get(score, score)}: {_model_label(model)}"
            if bool(row["estimable"]):
                titles.append(f"{head}<br>ρ = {row['rho']:.2f}, {p_text(row['p'])}, "
                              f"{p_text(row['p_fdr'], 'p<sub>FDR</sub>')}, n = {int(row['n'])}")
            else:
                titles.append(f"{head}<br>not estimable (n = {int(row['n'])})")
    fig = make_subplots(rows=len(tests), cols=len(models), subplot_titles=titles,
                        vertical_spacing=0.32 / len(tests), horizontal_spacing=0.1)
    for r, (group, score) in enumerate(tests, start=1):
        for c, model in enumerate(models, start=1):
            data = residuals[(model, group, score)]
            colour = model_colour(model)
            row = stats.loc[(model, group, score)]
            if not bool(row["estimable"]):
                note = str(row.get("note", "") or "too few subjects").removeprefix(
                    "not estimable: ")
                fig.add_annotation(text="<br>".join(textwrap.wrap(note, 34)), showarrow=False,
                                   xref="x domain" if (r, c) == (1, 1) else
                                   f"x{(r - 1) * len(models) + c} domain",
                                   yref="y domain" if (r, c) == (1, 1) else
                                   f"y{(r - 1) * len(models) + c} domain",
                                   x=0.5, y=0.5, font=dict(size=11, color="grey"))
            fig.add_trace(go.Scatter(x=data["score_residual"], y=data["gap_residual"],
                                     mode="markers", marker=dict(color=colour),
                                     text=data["participant_id"], name=_model_label(model),
                                     showlegend=False), row=r, col=c)
            if len(data) >= 3 and np.ptp(data["score_residual"]) > 0:
                x = data["score_residual"].to_numpy(float)
                # residuals have mean 0: the fit has no intercept
                slope = float(np.dot(x, data["gap_residual"]) / np.dot(x, x))
                xs = np.array([x.min(), x.max()])
                fig.add_trace(go.Scatter(x=xs, y=slope * xs, mode="lines",
                                         line=dict(color=colour), showlegend=False,
                                         hoverinfo="skip"), row=r, col=c)
            fig.update_xaxes(title_text=f"{SCORE_NAMES.get(score, score)} rank, residual",
                             row=r, col=c)
            fig.update_yaxes(title_text="gap rank, residual" if c == 1 else None, row=r, col=c)
    fig.update_annotations(font_size=12)
    return _finish(fig, height=310 * len(tests), margin=dict(l=60, r=20, t=60, b=50))


# --- brain slices (matplotlib) ---------------------------------------------------------------



def _iso(image: Any, voxel_mm: float | None = None) -> Any:
    """An image resampled onto an isotropic RAS grid (its smallest voxel size, >= 1 mm)."""
    import nibabel as nib
    from nilearn import image as nimg

    img = nimg.load_img(_readable(image))
    img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    size = voxel_mm or max(1.0, float(min(img.header.get_zooms()[:3])))
    return nimg.resample_img(img, target_affine=np.eye(3) * size, interpolation="continuous",
                             force_resample=True, copy_header=True)


def _centre_mm(img: Any) -> tuple[float, float, float]:
    """World coordinates (mm) of the intensity-weighted centre of an image."""
    from scipy import ndimage

    data = np.clip(np.asarray(img.dataobj, dtype=np.float64), 0, None)
    ijk = ndimage.center_of_mass(data) if data.sum() > 0 else np.array(data.shape) / 2
    return tuple(float(v) for v in (img.affine @ [*ijk, 1.0])[:3])




def example_slices(rows: list[tuple[str, Any, Any]], *,
                   cut_coords: tuple[float, float, float] = (0, -18, 4)) -> Any:
    """Orthogonal slices of example scans: each row a subject, raw scan left, preprocessed right.

    Each image is shown on an isotropic grid (sagittal, coronal and axial slices side by side,
    labelled P/A and L/R), its grey scale running from 0 to its own 99.5th percentile; one
    colour bar gives that scale. Column titles give each image's voxel size; row labels
    name the subject.

    Parameters
    ----------
    rows : list of (label, raw image, preprocessed image)
        Images as nibabel images or paths (NIfTI, or OpenBHB ``.npy`` arrays); the raw one is
        cut through its intensity-weighted centre, the preprocessed one at ``cut_coords`` in
        MNI space.
    cut_coords : tuple of float, default=(0, -18, 4)
        MNI coordinates (mm) of the preprocessed slices: through the ventricles and hippocampi.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors
    from nilearn import image as nimg

    if not rows:
        raise ValueError("example_slices needs at least one (label, raw, preprocessed) row")
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.1 * len(rows) + 0.9), squeeze=False,
                             layout="constrained")
    for (label, raw, prep), (ax_raw, ax_prep) in zip(rows, axes):
        for ax, image, kind, where in ((ax_raw, raw, "as read", None),
                                       (ax_prep, prep, "preprocessed (MNI152)", cut_coords)):
            zooms = nimg.load_img(_readable(image)).header.get_zooms()[:3]
            img = _iso(image)
            scan, _ = ortho_montage(img, [], where or _centre_mm(img))
            vmax = float(np.percentile(scan[scan > 0], 99.5)) if (scan > 0).any() else 1.0
            ax.imshow(scan / vmax, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            label_orientation(ax, panel_widths(img))
            voxel = " x ".join(f"{z:.3g}" for z in zooms)
            ax.set_title(f"{kind}: {voxel} mm voxels", fontsize=8, pad=2, loc="left")
        ax_raw.set_ylabel(label, fontsize=9)
    bar = fig.colorbar(cm.ScalarMappable(colors.Normalize(0, 1), cmap="gray"), ax=axes,
                       shrink=0.6, pad=0.01)
    bar.set_label("intensity / image's 99.5th percentile\n(scanner units, no absolute scale)",
                  fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig




def _readable(image: Any) -> Any:
    """An image nilearn can open: OpenBHB ``.npy`` arrays are read into NIfTI images."""
    if isinstance(image, (str, Path)) and str(image).endswith(".npy"):
        return open_image(image)
    return image


def masked_map(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values`` with every voxel outside ``mask`` set to 0 (float32).

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    values, mask = np.asarray(values), np.asarray(mask, dtype=bool)
    if values.shape != mask.shape:
        raise ValueError(f"map shape {values.shape} differs from mask shape {mask.shape}")
    return np.where(mask, values, 0).astype(np.float32)


def attribution_montage(maps: Mapping[str, np.ndarray], background: Any, mask: np.ndarray, *,
                        threshold: float, colourbar_label: str,
                        cut_coords: tuple[float, float, float] = (0, -18, 4),
                        signed: bool = False) -> Any:
    """Maps over a background scan, one row per model, on one shared, labelled colour scale.

    Every map is masked by ``mask`` (nothing is drawn outside the brain), shown where its
    magnitude reaches ``threshold``, and coloured on the same scale: 0 to the largest value of
    all maps (``hot``), or symmetric about 0 when ``signed`` (``coolwarm``). One colour bar,
    with the threshold marked, serves every row.

    Parameters
    ----------
    maps : mapping of str to ndarray, shape (D, H, W)
        Maps on the grid of ``background``, keyed by model (row label).
    background : nibabel image
        The scan drawn in grey (RAS grid of the maps).
    mask : bool ndarray, shape (D, H, W)
        The brain mask.
    threshold : float
        Smallest magnitude drawn (map units).
    colourbar_label : str
        What the colour bar measures, with its unit.
    cut_coords : tuple of float, default=(0, -18, 4)
        World coordinates (mm) of the sagittal, coronal and axial slices.
    signed : bool, default=False
        A diverging scale for signed maps.
    """
    import matplotlib.pyplot as plt
    import nibabel as nib
    from matplotlib import cm, colors

    if not maps:
        raise ValueError("attribution_montage needs at least one map")
    background = nib.as_closest_canonical(background)
    masked = {name: masked_map(values, mask) for name, values in maps.items()}
    vmax = max(float(np.abs(m).max()) for m in masked.values()) or 1.0
    norm = colors.Normalize(-vmax if signed else 0.0, vmax)
    cmap = plt.get_cmap("coolwarm" if signed else "hot")
    fig, axes = plt.subplots(len(masked), 1, figsize=(9, 2.3 * len(masked) + 0.6), squeeze=False,
                             layout="constrained")
    for (name, values), ax in zip(masked.items(), axes[:, 0]):
        scan, (overlay,) = ortho_montage(background, [values], cut_coords)
        ax.imshow(scan, cmap="gray", vmin=0, vmax=float(np.percentile(scan, 99.5)) or 1.0,
                  interpolation="nearest")
        shown = np.ma.masked_where(np.abs(overlay) < threshold, overlay)
        ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(_model_label(name) if name.lower() in MODEL_COLOURS else name, fontsize=9)
        label_orientation(ax, panel_widths(background))
    bar = fig.colorbar(cm.ScalarMappable(norm, cmap), ax=axes, shrink=0.8, pad=0.01)
    bar.set_label(colourbar_label, fontsize=8)
    for level in ((-threshold, threshold) if signed else (threshold,)):
        bar.ax.axhline(level, color="black", linewidth=1.0)
    bar.ax.tick_params(labelsize=7)
    return fig


def attribution_viewer(values: np.ndarray, background: Any, mask: np.ndarray, *,
                       threshold: float, title: str) -> Any:
    """nilearn's interactive viewer of a signed map, masked by the brain mask.

    ``title`` should be short (the viewer cuts long titles); the caption says the rest.
    """
    import nibabel as nib
    from nilearn import plotting

    if len(title) > 40:
        raise ValueError(f"viewer titles are cut after about 40 characters; got {len(title)}: "
                         f"{title!r}")
    img = nib.Nifti1Image(masked_map(values, mask), background.affine)
    return plotting.view_img(img, bg_img=background, cmap="cold_hot", symmetric_cmap=True,
                             threshold=threshold, title=title, width_view=640,
                             resampling_interpolation="nearest")










