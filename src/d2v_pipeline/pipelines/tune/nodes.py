"""Tune nodes: catalog inputs -> an Optuna study over data2vec's knobs -> tables, YAML, figures.

The Optuna logic lives in this package's modules (config, knobs, probe, storage, study,
export); these nodes only turn parameters and ingested data into their inputs, reusing the
pretrain nodes' params -> configs helper so a trial builds exactly the encoder and method the
pretrain pipeline would.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from d2v_pipeline.experiment import pretraining_data
from d2v_pipeline.pipelines.finetune.nodes import subset_indices
from d2v_pipeline.pipelines.pretrain.nodes import _configs
from d2v_pipeline.schema.runtime import runtime_of

from .config import TuneConfig, tune_config_from_dict
from .export import study_figures, study_summary, trials_table
from .knobs import best_params_document, default_knobs, trial_pretrain_params
from .probe import make_probe_data
from .storage import describe_storage
from .study import TrialContext, check_setup, open_study, run_study, study_setup

log = logging.getLogger(__name__)


def _base(
    dataset_info: Mapping[str, Any], pretrain_params: Mapping[str, Any], tune_params: Any
) -> tuple[TuneConfig, Any, dict[str, Any], tuple[Any, Any, Any]]:
    """What both nodes start from: the validated tune config, the params -> (encoder, method,
    train) configs builder, the default knobs and the full run's configs."""
    modality = dataset_info["modality"]
    cfg = tune_config_from_dict(modality, tune_params)
    build = partial(_configs, "data2vec", dataset_info)
    configs = build(pretrain_params)
    return cfg, build, default_knobs(configs[1], configs[2]), configs


def run_tuning_study(
    model_input: dict[str, torch.Tensor],
    label_subsets: dict[str, Any],
    dataset_info: dict[str, Any],
    pretrain_params: dict[str, Any],
    tune_params: dict[str, Any],
    runtime_params: dict[str, Any] | None,
    study_dir: Path,
) -> dict[str, Any]:
    """Run (or continue) the modality's study until it holds ``tune.n_trials`` trials.

    Args:
        model_input: ingested tensors; pretraining uses train (+ unlabelled), the probe a
            labelled train subset and the validation split. The test split is never read.
        label_subsets: ingest's labelled subsets ({"0.1": [...]} or per seed).
        dataset_info: shapes, vocabulary and content hash from ingest.
        pretrain_params: ``<m>.pretrain`` (the full run the knobs are tuned for).
        tune_params: ``<m>.tune`` (budget, search space, sampler, pruner, probe, storage).
        runtime_params: ``<m>.runtime`` (device, precision, threads) for the trials'
            pretraining and probes; a trial runs in one process (``nproc_per_node`` > 1 is
            ignored with a warning: run several workers instead).
        study_dir: folder of the default journal-file study.

    Returns:
        A record of this run: trials run, counts before/after, seconds, storage.
    """
    cfg, build, defaults, (enc, method, train) = _base(dataset_info, pretrain_params, tune_params)
    runtime = runtime_of(runtime_params, cfg.modality)
    if runtime.nproc_per_node > 1:
        log.warning(
            "%s.runtime.nproc_per_node %d: a tuning trial runs in one process; start several "
            "tuning workers on the study instead (README: Tuning on a shared database)",
            cfg.modality,
            runtime.nproc_per_node,
        )
        runtime = dataclasses.replace(runtime, nproc_per_node=1)
    idx = subset_indices(label_subsets, cfg.probe.label_fraction, cfg.probe.subset_seed)
    ctx = TrialContext(
        cfg=cfg,
        pretrain_params=dict(pretrain_params),
        data=pretraining_data(model_input),
        probe=make_probe_data(model_input, idx, cfg.probe.split_seed),
        build_configs=build,
        defaults=defaults,
        depth=enc.depth,
        full_steps=train.steps,
        anneal_end_step=method.ema_anneal_end_step,
        runtime=runtime,
    )
    trial_params = trial_pretrain_params(
        pretrain_params, defaults, cfg, train.steps, method.ema_anneal_end_step
    )
    setup = study_setup(
        cfg, dataset_info, (enc, method, train), build(trial_params)[2], runtime.precision
    )
    where = describe_storage(cfg.storage, study_dir)
    study, storage, lock = open_study(cfg, study_dir)
    check_setup(study, setup, where)
    log.info(
        "%s: study %r in %s: up to %d trials of %d pretraining steps",
        cfg.modality,
        cfg.study_name,
        where,
        cfg.n_trials,
        cfg.steps,
    )
    record = run_study(study, storage, lock, ctx)
    log.info(
        "%s: ran %d trial(s) in %.1f s; study holds %d of %d (%s)",
        cfg.modality,
        len(record["trials_run"]),
        record["seconds"],
        record["counted_after"],
        cfg.n_trials,
        record["stop_reason"],
    )
    return {
        "modality": cfg.modality,
        "study_name": cfg.study_name,
        "storage": where,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **record,
    }


def export_tuning_results(
    tune_run: dict[str, Any],
    dataset_info: dict[str, Any],
    pretrain_params: dict[str, Any],
    tune_params: dict[str, Any],
    study_dir: Path,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Read the study back from its storage and export it.

    Args:
        tune_run: the run record (orders this node after the study; not otherwise used).

    Returns:
        The trials table, the best knobs as a parameters_pretrain.yml fragment (``{}`` when
        no trial completed), a JSON summary (best vs default, counts, steps saved by
        pruning) and the figures.
    """
    cfg, _, defaults, (_, _, train) = _base(dataset_info, pretrain_params, tune_params)
    study, _, _ = open_study(cfg, study_dir)
    tuned = cfg.searched()
    summary = study_summary(
        study, cfg, defaults, train.steps, describe_storage(cfg.storage, study_dir)
    )
    best = summary["best"]["knobs"] if summary["best"] else None
    if best is None:
        log.warning("%s: no complete trial yet; the best-params file is empty", cfg.modality)
    best_doc = best_params_document(cfg.modality, best, tuned_lr="lr" in tuned)
    table = trials_table(study, defaults, tuned)
    return table, best_doc, summary, study_figures(study)
