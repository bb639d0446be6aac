"""The report's figures: sized for the page with readable ticks, one legend per figure,
methods told apart by marker and line style (not colour alone), single-epoch curves visible,
and identical schedules drawn once and named."""

from __future__ import annotations

import pytest

from d2v_pipeline.reporting import (
    build_figures,
    gather_inputs,
    report_config_from_dict,
    summarise_report,
)
from d2v_pipeline.reporting.figures import FIGURE_WIDTH, method_styles

CONFIG = report_config_from_dict({})


@pytest.fixture(scope="module")
def figures(make_datasets):
    inputs = gather_inputs(make_datasets())
    return build_figures(inputs, summarise_report(inputs, CONFIG), CONFIG)


def test_figures_fit_the_text_column_with_ticks_of_at_least_9_pt(figures):
    assert len(figures) >= 5
    for name, fig in figures.items():
        assert fig.get_size_inches()[0] <= FIGURE_WIDTH + 1e-9, name
        for ax in fig.axes:
            for label in ax.get_xticklabels() + ax.get_yticklabels():
                if label.get_text():
                    assert label.get_fontsize() >= 9, (name, label.get_text())
    # confusion matrices are small: the page shows them at most ~350 px tall
    assert figures["image_confusion_data2vec"].get_size_inches()[1] <= 3.6


def test_one_shared_legend_per_figure(figures):
    for name in ("image_label_efficiency", "image_pretraining", "image_finetune_curves"):
        fig = figures[name]
        assert len(fig.legends) == 1, name
        assert all(ax.get_legend() is None for ax in fig.axes), name


def test_methods_differ_by_colour_marker_and_line_style():
    styles = method_styles(["data2vec", "extra"], CONFIG.method_order)
    assert len(styles) == len(CONFIG.method_order) + 1
    for key in ("color", "marker", "linestyle"):
        values = [str(s[key]) for s in styles.values()]
        assert len(set(values)) == len(values), key


def test_single_epoch_fine_tuning_curves_are_drawn_as_markers(make_datasets):
    datasets = make_datasets()
    curves = datasets["image.finetune_curves"]
    datasets["image.finetune_curves"] = curves[curves["epoch"] == 0]
    inputs = gather_inputs(datasets)
    fig = build_figures(inputs, summarise_report(inputs, CONFIG), CONFIG)["image_finetune_curves"]
    # errorbar containers: (data line, caps, bars) per method and panel
    points = [c.lines[0] for ax in fig.axes for c in ax.containers]
    assert points and all(ln.get_marker() not in (None, "None", "") for ln in points)
    # in each panel the methods' points sit side by side instead of on top of each other
    for ax in fig.axes:
        xs = [float(c.lines[0].get_xdata()[0]) for c in ax.containers]
        assert len(set(xs)) == len(xs) == 2


def test_identical_schedules_are_drawn_once_and_named(figures):
    # the fixture's data2vec and masked_recon share one lr and one τ schedule
    fig = figures["image_pretraining"]
    panel = next(ax for ax in fig.axes if ax.get_title().startswith("learning rate"))
    assert "(data2vec = masked_recon)" in panel.get_title()
    assert [ln.get_label() for ln in panel.get_lines()] == ["data2vec"]
    loss = next(ax for ax in fig.axes if ax.get_title().startswith("loss"))
    assert len(loss.get_lines()) == 1  # identical losses in the fixture too
