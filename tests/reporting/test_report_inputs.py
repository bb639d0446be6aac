"""Input validation: malformed inputs fail with errors naming the dataset, row and column;
missing optional inputs are accepted; parameter diffs list changed keys."""

from __future__ import annotations

import pandas as pd
import pytest

from d2v_pipeline.reporting import ReportInputError, gather_inputs, lane_inputs, params_diff


def test_value_outside_zero_one_names_dataset_and_row(make_metrics):
    df = make_metrics("image", fractions=(0.1,))
    df.loc[4, "value"] = 1.7
    with pytest.raises(ReportInputError, match=r"image\.eval_metrics: row 4 .*value 1\.7"):
        gather_inputs({"image.eval_metrics": df})


def test_missing_column_names_dataset_and_column(make_metrics):
    df = make_metrics("image", fractions=(0.1,)).drop(columns=["seed"])
    with pytest.raises(
        ReportInputError, match=r"image\.eval_metrics: missing column\(s\) \['seed'\]"
    ):
        gather_inputs({"image.eval_metrics": df})


def test_non_numeric_value_names_the_row(make_metrics):
    df = make_metrics("text", fractions=(0.1,)).astype({"fraction": object})
    df.loc[2, "fraction"] = "ten percent"
    with pytest.raises(ReportInputError, match=r"text\.eval_metrics: row 2 .*'fraction'"):
        gather_inputs({"text.eval_metrics": df})


def test_duplicate_results_and_wrong_modality_are_errors(make_metrics):
    df = make_metrics("image", fractions=(0.1,))
    doubled = pd.concat([df, df.iloc[[3]]], ignore_index=True)
    with pytest.raises(ReportInputError, match="duplicate result"):
        gather_inputs({"image.eval_metrics": doubled})
    with pytest.raises(ReportInputError, match="does not match the dataset's modality 'speech'"):
        gather_inputs({"speech.eval_metrics": df})


def test_malformed_metadata_history_and_confusion_name_the_dataset():
    with pytest.raises(ReportInputError, match=r"image\.data2vec\.pretrain_meta: key 'collapsed'"):
        gather_inputs({"image.data2vec.pretrain_meta": {"collapsed": "maybe"}})
    with pytest.raises(ReportInputError, match=r"image\.data2vec\.pretrain_history: missing"):
        gather_inputs({"image.data2vec.pretrain_history": pd.DataFrame({"loss": [1.0]})})
    bad = {"confusion": {"data2vec": {"finetune": {"0.1": [[1, 2], [3]]}}}}
    with pytest.raises(ReportInputError, match=r"image\.eval_details: confusion\.data2vec"):
        gather_inputs({"image.eval_details": bad})
    with pytest.raises(ReportInputError, match=r"node_timings: node 'a'"):
        gather_inputs({"node_timings": {"a": "slow"}})


def test_unknown_dataset_name_is_an_error():
    with pytest.raises(ReportInputError, match=r"unexpected input dataset 'image\.evalmetrics'"):
        gather_inputs({"image.evalmetrics": pd.DataFrame()})


def test_missing_optional_inputs_are_accepted(make_metrics):
    inputs = gather_inputs(
        {
            "image.eval_metrics": make_metrics("image", fractions=(0.1,)),
            "image.eval_details": None,
            "image.finetune_curves": None,
            "image.data2vec.pretrain_history": None,
            "text.eval_metrics": None,
            "text.tune_study": {"trials": 3},
            "node_timings": None,
        }
    )
    # a lane counts as run when its eval_metrics exist: text did not run
    assert set(inputs.modalities) == {"image"}
    assert inputs.missing_lanes == ("text",)
    assert inputs.node_timings is None and inputs.run_info is None


def test_lane_bundles_validate_with_full_catalog_names(make_metrics):
    lane = lane_inputs("image", {"eval_metrics": make_metrics("image", fractions=(0.1,))})
    assert lane.present and lane.name == "image"
    inputs = gather_inputs(
        {"image.report_inputs": lane, "speech.report_inputs": lane_inputs("speech", {})}
    )
    assert list(inputs.modalities) == ["image"] and inputs.missing_lanes == ("speech",)
    bad = {"eval_metrics": None, "data2vec.pretrain_meta": {"collapsed": "maybe"}}
    with pytest.raises(ReportInputError, match=r"speech\.data2vec\.pretrain_meta: key 'collapsed'"):
        lane_inputs("speech", bad)
    with pytest.raises(ReportInputError, match=r"text\.report_inputs: expected the text lane"):
        gather_inputs({"text.report_inputs": lane})


def test_run_info_is_type_checked_and_empty_means_not_recorded():
    assert gather_inputs({"run_info": {}}).run_info is None
    info = {"env": "smoke", "git_commit": None, "git_clean": None, "git_changes": ["a.py"]}
    assert gather_inputs({"run_info": info}).run_info == info
    with pytest.raises(ReportInputError, match=r"run_info: key 'git_clean' must be bool or null"):
        gather_inputs({"run_info": {"git_clean": "yes"}})
    with pytest.raises(ReportInputError, match=r"run_info: key 'git_changes_total' must be int"):
        gather_inputs({"run_info": {"git_changes_total": True}})


def test_params_diff_lists_changed_added_and_removed_keys():
    base = {"image": {"pretrain": {"steps": 2000, "lr": 1e-3}}, "seed": 0, "a": {"b": [1, 2]}}
    run = {"image": {"pretrain": {"steps": 5, "lr": 0.001}}, "seed": 0, "new": True}
    changes = {c.key: (c.run_text, c.base_text) for c in params_diff(run, base)}
    assert changes == {
        "image.pretrain.steps": ("5", "2000"),
        "a.b": ("(absent)", "[1, 2]"),
        "new": ("true", "(absent)"),
    }
    assert params_diff(base, base) == []
