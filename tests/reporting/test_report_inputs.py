"""Input validation: malformed inputs fail with errors naming the dataset, row and column;
missing optional inputs are accepted; parameter diffs list changed keys."""

from __future__ import annotations

import pandas as pd
import pytest

from d2v_pipeline.reporting import ReportInputError, gather_inputs, params_diff


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
    assert set(inputs.modalities) == {"image", "text"}
    assert inputs.modalities["text"].eval_metrics.empty
    assert inputs.modalities["text"].extras == {"tune_study": {"trials": 3}}
    assert inputs.node_timings is None


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
