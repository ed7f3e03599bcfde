from __future__ import annotations

import json

import matplotlib
import nibabel as nib
import numpy as np
import pandas as pd
import plotly.express as px
import pytest

from brainage.analysis import metrics
from brainage.study import figures

matplotlib.use("Agg")


def test_plotly_figure_bundle_has_no_plotly_js():
    fig = px.scatter(x=[1, 2, 3], y=[3, 1, 2], title="demo")
    bundle = figures.PlotlyFigure(fig)._repr_mimebundle_()
    html = bundle["text/html"]
    assert "plotly-graph-div" in html and "Plotly.newPlot" in html
    assert "<script src=" not in html and len(html) < 100_000  # plotly.js comes from _static
    assert json.loads(json.dumps(bundle["application/vnd.plotly.v1+json"]))["data"]
    assert bundle["text/plain"] == "<plotly figure: demo>"


def test_show_displays_immediately(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    assert figures.show(px.scatter(x=[1], y=[1])) is None
    assert len(shown) == 1 and isinstance(shown[0], figures.PlotlyFigure)


def test_example_slices_grid(tmp_path):
    img = nib.Nifti1Image(np.random.default_rng(0).random((7, 8, 9)).astype(np.float32), np.eye(4))
    fig = figures.example_slices([("a", img, img), ("b", img, img)], cut_coords=(3, 4, 4))
    assert len(fig.axes) >= 4
    with pytest.raises(ValueError, match="at least one"):
        figures.example_slices([])




# --- one style across the book --------------------------------------------------------------


def _predictions(rng, n=12):
    """Test predictions of two models for the same subjects (rows per model)."""
    age = rng.uniform(20, 80, n)
    rows = []
    for model, noise in (("rnc", 3.0), ("l1", 5.0)):
        predicted = age + rng.normal(0, noise, n)
        rows.append(pd.DataFrame({
            "participant_id": [f"sub-{i:02d}" for i in range(n)], "model": model, "age": age,
            "predicted": predicted, "gap": predicted - age, "corrected_gap": predicted - age - 1,
            "age_lower": predicted - 4, "age_upper": predicted + 5,
            "group": rng.choice(["HC", "AD", "PD"], n)}))
    return pd.concat(rows, ignore_index=True)


def _trace_colour(trace):
    marker = getattr(trace, "marker", None)
    colour = getattr(marker, "color", None) if marker is not None else None
    if isinstance(colour, str):
        return colour
    line = getattr(trace, "line", None)
    return getattr(line, "color", None)


def _model_figures(rng):
    test = _predictions(rng)
    by_bin = pd.concat([metrics.error_by_age_bin(rows["age"], rows["predicted"], [20, 50, 81],
                                                 n_boot=200).assign(model=name)
                        for name, rows in test.groupby("model")], ignore_index=True)
    history = pd.DataFrame({"stage": ["rnc_encoder"] * 2 + ["rnc_head"] * 2 + ["l1"] * 2,
                            "model": ["RNC"] * 4 + ["L1"] * 2, "epoch": [1, 2] * 3,
                            "val_mae": [9.0, 8.0, 7.0, 6.0, 8.5, 7.5],
                            "train_loss": [3.0, 2.0, 7.0, 6.0, 8.0, 7.0]})
    regions = pd.DataFrame({"region": ["hippocampus_l", "ventricles"] * 3,
                            "model": ["RNC", "RNC", "L1", "L1", "PERMUTED", "PERMUTED"],
                            "mean_abs": [0.3, 0.2, 0.25, 0.1, 0.1, 0.1]})
    checks = test.assign(baseline_predicted=50.0,
                         attribution_sum=test["predicted"] - 50.0 + rng.normal(0, 0.1, len(test)))
    return [figures.predicted_against_age(test), figures.predicted_against_age(test, intervals=True),
            figures.bland_altman(test), figures.gap_against_age(test), figures.gap_by_group(test),
            figures.error_by_age(by_bin), figures.training_curves(history, 10.0),
            figures.training_loss(history), figures.region_attribution(regions),
            figures.attribution_sums(checks)]


def test_one_colour_per_model_across_figures(rng):
    seen: dict[str, set] = {}
    curves = _model_figures(rng)[6]  # legend: one entry per stage, named once
    assert [t.name for t in curves.data] == ["RNC stage 1: encoder (ridge probe)",
                                             "RNC stage 2: linear head", "L1: end to end"]
    for fig in _model_figures(rng):
        assert not fig.layout.title.text  # the numbered caption carries the title
        for trace in fig.data:
            model = next((label for label in figures.MODEL_LABELS.values()
                          if trace.name == label or trace.name.startswith(label + " ")), None)
            if model is not None:  # a model, or a stage of one ("RNC stage 1: ...")
                seen.setdefault(model, set()).add(_trace_colour(trace))
    assert seen == {"RNC": {figures.MODEL_COLOURS["rnc"]}, "L1": {figures.MODEL_COLOURS["l1"]},
                    "permuted-age control": {figures.MODEL_COLOURS["permuted"]}}
    assert len(set(figures.MODEL_COLOURS.values())) == len(figures.MODEL_COLOURS)
    assert figures.model_colour("RNC") == figures.model_colour("rnc")
    with pytest.raises(ValueError, match="unknown model 'svm'"):
        figures.model_colour("svm")


def test_group_colours_fixed(rng):
    table = pd.DataFrame({"participant_id": [f"s{i}" for i in range(9)],
                          "site": ["a", "b", "c"] * 3, "registration_misfit_mm": np.linspace(0.3, 0.9, 9),
                          "group": ["PD", "HC", "AD"] * 3, "age": np.linspace(20, 80, 9)})
    for fig in (figures.alignment_strip(table, 0.4), figures.age_histogram(table)):
        colours = {t.name: _trace_colour(t) for t in fig.data}
        assert colours == {g: figures.GROUP_COLOURS[g] for g in ("HC", "AD", "PD")}
        assert [t.name for t in fig.data][:3] == ["HC", "AD", "PD"]


def test_facet_labels_and_axes(rng):
    tissue = pd.DataFrame({"participant_id": [f"s{i}" for i in range(8)],
                           "age": np.linspace(20, 80, 8), "group": ["HC"] * 6 + ["AD"] * 2,
                           "csf_fraction": np.linspace(0.1, 0.3, 8),
                           "gm_fraction": np.linspace(0.5, 0.4, 8)})
    fig = figures.tissue_by_age(tissue)
    labels = [a.text for a in fig.layout.annotations]
    assert labels == ["CSF", "grey matter"]
    yaxes = [fig.layout[k] for k in fig.layout if k.startswith("yaxis")]
    assert len(yaxes) == 2 and all(y.showticklabels and y.matches is None for y in yaxes)
    table = pd.DataFrame({"age": np.linspace(20, 80, 6), "group": "HC",
                          "site": ["siteA", "siteB"] * 3})
    table = pd.DataFrame({"age": np.linspace(20, 80, 6), "group": "HC",
                          "site": ["siteC", "siteA", "siteB"] * 2})
    rows = sorted(figures.age_histogram(table).layout.annotations, key=lambda a: -a.y)
    assert [a.text for a in rows] == ["siteA", "siteB", "siteC"]  # in order, top to bottom
    for fig in _model_figures(rng):
        assert not [a.text for a in fig.layout.annotations if a.text and "=" in a.text
                    and not a.text.startswith("n=")], "a facet label kept its name= prefix"


def test_bland_altman_labels_each_model_in_its_own_panel(rng):
    test = _predictions(rng)
    fig = figures.bland_altman(test)
    notes = [a for a in fig.layout.annotations if "SD" in a.text or "mean" in a.text]
    assert len(notes) == 6
    by_panel: dict[str, list] = {}
    for note in notes:
        by_panel.setdefault(note.xref, []).append(note)
    assert len(by_panel) == 2  # one panel per model: labels never share a panel
    for panel in by_panel.values():
        assert sorted(n.text.split()[0] for n in panel) == ["+1.96", "-1.96", "mean"]
        # distinct anchors (left/right, above/below): no two labels drawn at one place
        assert len({(n.x, n.xanchor, n.yanchor, n.y) for n in panel}) == 3
    rnc = test[test["model"] == "rnc"]["gap"]
    texts = [n.text for n in by_panel[sorted(by_panel)[0]]]  # the first panel: RNC
    assert f"mean {rnc.mean():+.1f}" in texts
    assert f"+1.96 SD {rnc.mean() + 1.96 * rnc.std():+.1f}" in texts


def test_error_by_age_shows_n_and_ci(rng):
    test = _predictions(rng, n=20)
    rows = test[test["model"] == "rnc"]
    by_bin = metrics.error_by_age_bin(rows["age"], rows["predicted"], [20, 50, 81],
                                      n_boot=200).assign(model="rnc")
    fig = figures.error_by_age(by_bin)
    bar = fig.data[0]
    assert list(bar.text) == [f"n={n}" for n in by_bin["n"]]
    np.testing.assert_allclose(bar.error_y.array, by_bin["mae_ci_high"] - by_bin["mae"])
    np.testing.assert_allclose(bar.error_y.arrayminus, by_bin["mae"] - by_bin["mae_ci_low"])
    assert "CI" in fig.layout.yaxis.title.text and "years" in fig.layout.yaxis.title.text
    with pytest.raises(ValueError, match="lacks columns"):
        figures.error_by_age(by_bin.drop(columns=["mae_ci_low"]))


def test_severity_residuals_titles_and_fit():
    x = np.linspace(-5, 5, 11)
    residuals = {("rnc", "AD", "mmse"): pd.DataFrame({"participant_id": list("abcdefghijk"),
                                                      "score_residual": x,
                                                      "gap_residual": -0.5 * x}),
                 ("l1", "AD", "mmse"): pd.DataFrame(columns=["participant_id", "score_residual",
                                                             "gap_residual"])}
    correlations = pd.DataFrame([
        {"model": "rnc", "group": "AD", "score": "mmse", "n": 11, "rho": -0.41, "p": 0.0004,
         "p_fdr": 0.0312, "estimable": True},
        {"model": "l1", "group": "AD", "score": "mmse", "n": 3, "rho": np.nan, "p": np.nan,
         "p_fdr": np.nan, "estimable": False,
         "note": "n=3 complete AD subjects with mmse < 8 required"}])
    fig = figures.severity_residuals(residuals, correlations)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0] == ("AD, MMSE: RNC<br>ρ = -0.41, p < 0.001, p<sub>FDR</sub> = 0.031, "
                         "n = 11")
    assert titles[1] == "AD, MMSE: L1<br>not estimable (n = 3)"
    # the reason, in the empty panel, whole (not taken for a facet label)
    assert titles[2].replace("<br>", " ") == "n=3 complete AD subjects with mmse < 8 required"
    points, line = fig.data[0], fig.data[1]
    assert points.marker.color == line.line.color == figures.MODEL_COLOURS["rnc"]
    np.testing.assert_allclose(np.diff(line.y) / np.diff(line.x), -0.5)  # the residuals' fit
    assert "rank, residual" in fig.layout.xaxis.title.text
    with pytest.raises(ValueError, match="at least one"):
        figures.severity_residuals({}, correlations)


# --- brain slices -----------------------------------------------------------------------------


def test_masked_map_and_bad_shape():
    values = np.arange(24, dtype=float).reshape(2, 3, 4) + 1
    mask = np.zeros((2, 3, 4), bool)
    mask[1] = True
    out = figures.masked_map(values, mask)
    assert out.dtype == np.float32 and (out[0] == 0).all() and (out[1] == values[1]).all()
    with pytest.raises(ValueError, match=r"map shape \(2, 3, 4\) differs from mask shape"):
        figures.masked_map(values, mask[:, :2])


def _brain(shape=(9, 10, 11)):
    data = np.zeros(shape, dtype=np.float32)
    data[2:7, 2:8, 2:9] = 1.0
    return data


def test_attribution_montage_masks_and_shares_one_scale():
    data = _brain()
    background = nib.Nifti1Image(data, np.eye(4))
    mask = data > 0
    strong = np.full(data.shape, 2.0)  # everywhere, also outside the brain
    weak = np.full(data.shape, 0.5)
    fig = figures.attribution_montage({"rnc": strong, "l1": weak}, background, mask,
                                      threshold=0.2, colourbar_label="mean |attribution| (a.u.)",
                                      cut_coords=(4, 5, 5))
    rows = [ax for ax in fig.axes if ax.images]
    assert [ax.get_ylabel() for ax in rows] == ["RNC", "L1"]
    assert len(fig.axes) == 3  # two rows and one colour bar
    assert fig.axes[-1].get_ylabel() == "mean |attribution| (a.u.)"
    overlays = [ax.images[1] for ax in rows]
    assert {o.norm.vmin for o in overlays} == {0.0} and {o.norm.vmax for o in overlays} == {2.0}
    scan = rows[0].images[0].get_array()
    shown = overlays[0].get_array()
    assert not np.ma.getmaskarray(shown)[scan > 0].any()  # drawn inside the brain
    assert np.ma.getmaskarray(shown)[scan == 0].all()  # and nowhere outside it
    letters = sorted(t.get_text() for t in rows[0].texts)
    assert letters == ["A", "L", "L", "P", "R", "R"]


def test_attribution_viewer_masks_and_keeps_title_short(monkeypatch):
    from nilearn import plotting

    data = _brain()
    background = nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0]))
    view = figures.attribution_viewer(np.ones(data.shape), background, data > 0, threshold=0.1,
                                      title="RNC, oldest third")
    assert "RNC, oldest third" in view.get_standalone()
    passed = {}
    monkeypatch.setattr(plotting, "view_img", lambda img, **kw: passed.update(img=img, **kw))
    figures.attribution_viewer(np.ones(data.shape), background, data > 0, threshold=0.1,
                               title="RNC, oldest third")
    shown = np.asarray(passed["img"].dataobj)
    assert (shown[data == 0] == 0).all() and (shown[data > 0] == 1).all()  # masked
    assert passed["threshold"] == 0.1 and passed["bg_img"] is background
    with pytest.raises(ValueError, match="viewer titles are cut"):
        figures.attribution_viewer(np.ones(data.shape), background, data > 0, threshold=0.1,
                                   title="RNC: mean signed attribution of the oldest third")


def test_example_slices_labels_units_and_orientation():
    data = _brain((12, 14, 16))
    data[2:4, 2:8, 2:9] = 3.0  # bright on the subject's left (low x in RAS)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    fig = figures.example_slices([("youngest control\nsub-01, 21 y", img, img)],
                                 cut_coords=(10, 10, 10))
    raw, prep = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert raw.get_title(loc="left") == "as read: 2 x 2 x 2 mm voxels"
    assert raw.get_ylabel() == "youngest control\nsub-01, 21 y"
    bar = [ax for ax in fig.axes if "percentile" in ax.get_ylabel()]
    assert len(bar) == 1  # one labelled colour bar
    texts = {t.get_text(): t for t in prep.texts}
    assert set(texts) == {"P", "A", "L", "R"}
    # coronal panel: the bright left side is drawn next to its "L"
    montage = prep.images[0].get_array()
    widths = [14 * 2 // 2, 12 * 2 // 2]  # resampled to 2 mm: unchanged shape
    coronal = montage[:, widths[0] + 2:widths[0] + 2 + widths[1]]
    column_profile = coronal.max(axis=0)
    assert np.argmax(column_profile) < widths[1] / 2


def test_glue_figure_wraps_plotly_and_closes_matplotlib(monkeypatch):
    import matplotlib.pyplot as plt

    glued = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, obj, display=True: glued.update(
        {name: (obj, display)}))
    figures.glue_figure("fig-00-plotly", px.scatter(x=[1], y=[1]))
    fig = plt.figure()
    figures.glue_figure("fig-00-mpl", fig)
    assert isinstance(glued["fig-00-plotly"][0], figures.PlotlyFigure)
    assert glued["fig-00-mpl"] == (fig, False) and not plt.fignum_exists(fig.number)
    with pytest.raises(ValueError, match="start with 'fig-'"):
        figures.glue_figure("alignment", fig)




def test_training_loss_gives_each_stage_its_own_epoch_axis():
    # issue 32: the RNC head's 100 epochs squeezed the encoder's 15 and L1's 30 into the first
    # tenth of a shared axis; each panel now spans its own stage's epochs
    rows = [("rnc_encoder", "RNC", 15), ("rnc_head", "RNC", 100), ("l1", "L1", 30)]
    history = pd.DataFrame([{"stage": s, "model": m, "epoch": e, "train_loss": 10.0 / e,
                             "val_mae": 5.0} for s, m, n in rows for e in range(1, n + 1)])
    fig = figures.training_loss(history)
    axes = [fig.layout[k] for k in fig.layout if k.startswith("xaxis")]
    assert len(axes) == 3 and all(a.matches is None for a in axes)
    assert all(a.showticklabels for a in axes)
    spans = sorted(max(t.x) for t in fig.data)
    assert spans == [15, 30, 100]


def test_calibration_curve_draws_models_methods_and_the_goal(rng):
    from brainage.analysis.site_calibration import calibration_curve
    from brainage.analysis.uncertainty import ConformalInterval

    age = rng.uniform(23.0, 74.0, 30)
    interval = ConformalInterval.fit(rng.normal(0.0, 3.0, 30), level=0.9)
    table = pd.concat([calibration_curve(age, 0.7 * age - 20 + rng.normal(0, 2, 30),
                                         interval=interval, prior=(0.9, 5.0), ks=(5, 10, 20),
                                         repeats=5, seed=0).assign(model=m)
                       for m in ("rnc", "l1")], ignore_index=True)
    fig = figures.calibration_curve(table, level=0.9)
    mae_ax, coverage_ax = fig.axes
    labels = [line.get_label() for line in coverage_ax.get_lines()]
    assert labels.count("the k scans' mean age (no model)") == 1  # once, not per model
    assert "RNC: site calibration" in labels and "L1: plain linear refit" in labels
    assert not any("own slope" in label for label in labels)  # in the tables only
    site = next(line for line in coverage_ax.get_lines() if line.get_label() == "RNC: site calibration")
    assert site.get_color() == figures.model_colour("rnc")
    assert list(site.get_xdata()) == [5, 10, 20] and np.isnan(site.get_ydata()[0])
    assert mae_ax.get_yscale() == "log" and coverage_ax.get_ylim()[1] == pytest.approx(1.02)
    assert any(p.get_label() == "goal 0.85-0.95" for p in coverage_ax.patches)
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="coverage_p10"):
        figures.calibration_curve(table.drop(columns="coverage_p10"))
