"""Evaluation nodes: each method's encoder on the labelled subsets, and a raw-input baseline.

For a modality, every method (``data2vec``, ``masked_recon``, ``scratch`` = random init)
is evaluated the same way, at each label fraction and seed:

- ``probe_final``: logistic regression on frozen, mean-pooled final-layer features;
- ``probe_topk``: the same on the mean of the layer-normed top-K block outputs (a
  final-layer probe is harsh for masked-prediction models);
- ``finetune``: the whole encoder (front-end included, for every method) + a linear head,
  early-stopped on validation.

The regularisation strength and the fine-tuning stopping point are chosen on the
validation split; the test split is scored once per run. The spread over seeds
comes from the labelled subset (drawn per seed, see ``label_subsets``) and the
fine-tuning initialisation/order; each method has one pretraining run. The protocol is
written up in docs/protocol.md.

Where the encoder runs is ``<m>.runtime``: the probes' features are extracted on its device
and precision, in this process; the fine-tuning runs of a node go through
:func:`~d2v_pipeline.data2vec.runtime.launch` together (:func:`finetune_runs`), in this
process or on ``nproc_per_node`` data-parallel workers.

Besides the metrics, every evaluation records its per-example test predictions
(``PREDICTION_COLUMNS``, one row per test example): the report's paired bootstrap over
test examples resamples them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from d2v_pipeline.data2vec.encoders import load_encoder
from d2v_pipeline.data2vec.runtime import Runtime, launch
from d2v_pipeline.evaluation import (
    FinetuneConfig,
    FinetuneResult,
    ProbeResult,
    RawBaselineConfig,
    extract_feature_sets,
    finetune,
    linear_probe,
    raw_features,
    tidy_rows,
)
from d2v_pipeline.io import CONTENT_HASH_KEY, tensors_sha256
from d2v_pipeline.schema.check import validated
from d2v_pipeline.schema.finetune import Evaluation
from d2v_pipeline.schema.runtime import runtime_of

log = logging.getLogger(__name__)

METRICS = ("accuracy", "macro_f1")
SPLITS = ("train", "val", "test")
PREDICTION_COLUMNS = (
    "modality", "method", "protocol", "fraction", "seed", "example", "label", "prediction"
)  # fmt: skip


def _evaluation(params: dict[str, Any], modality: str) -> Evaluation:
    """``<m>.finetune`` validated, with the schema's defaults for the keys it leaves out."""
    return validated(Evaluation, params, f"{modality}.finetune", "parameters_finetune.yml")


def subset_indices(label_subsets: dict[str, Any], fraction: float, seed: int) -> np.ndarray:
    """Train indices of the labelled subset for ``fraction`` and ``seed``.

    ``label_subsets`` maps a fraction ("0.1") to either a list of indices (one subset for
    every seed) or to {seed: indices} (a subset drawn per seed).
    """
    key = _fraction_key(label_subsets, fraction)
    entry = label_subsets[key]
    if isinstance(entry, dict):
        if str(seed) not in entry:
            raise KeyError(
                f"label_subsets[{key!r}] has no subset for seed {seed} (has {sorted(entry)}); "
                "add the seed to the ingest parameters' subset seeds"
            )
        entry = entry[str(seed)]
    return np.asarray(entry, dtype=np.int64)


def _fraction_key(label_subsets: dict[str, Any], fraction: float) -> str:
    for key in label_subsets:
        try:
            if abs(float(key) - float(fraction)) < 1e-9:
                return key
        except ValueError:
            continue
    raise KeyError(
        f"no labelled subset for fraction {fraction}; ingest made {sorted(label_subsets)} "
        "(parameters_finetune.yml fractions must be among parameters_ingest.yml label_fractions)"
    )


def _split(model_input: dict[str, torch.Tensor], name: str) -> tuple:
    x, y = model_input[f"{name}.x"], model_input[f"{name}.y"]
    am = model_input.get(f"{name}.attention_mask")
    return (x, y) if am is None else (x, y, am)


def _take(split: tuple, idx: np.ndarray) -> tuple:
    t = torch.from_numpy(idx)
    return tuple(part[t] for part in split)


def _feature_sets(
    encoder: torch.nn.Module,
    split: tuple,
    sets: dict[str, tuple[str, int | None]],
    pool: str,
    source: str,
    split_name: str,
    runtime: Runtime,
) -> dict[str, np.ndarray]:
    """Features of one split; non-finite values stop here, naming the encoder ``source``."""
    am = split[2] if len(split) == 3 else None
    feats = extract_feature_sets(encoder, split[0], am, sets=sets, pool=pool, runtime=runtime)
    for name, values in feats.items():
        bad = ~np.isfinite(values)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise FloatingPointError(
                f"{source}: the encoder's {name} features of the {split_name} split have "
                f"{int(bad.sum())} NaN/inf values ({len(rows)} of {len(values)} examples, "
                f"first row {int(rows[0])}); the encoder diverged or its weights are damaged"
            )
    return feats


def _rebuild_hint(modality: str) -> str:
    return f"rebuild it: kedro run --namespaces {modality} --pipelines pretrain"


def _encoder_source(encoder_state: Any, modality: str, method: str) -> str:
    """The file the weights came from (the catalog's EncoderDataset records it), for errors."""
    path = getattr(encoder_state, "path", None)
    return str(path) if path is not None else f"the {modality}.{method}.encoder weights"


def check_encoder_weights(
    encoder_state: dict[str, torch.Tensor], pretrain_meta: dict[str, Any], source: str
) -> None:
    """Refuse weights that cannot give meaningful features, naming ``source``:

    - weights whose content hash differs from the one ``metadata.json`` recorded when they
      were written (the encoder and its metadata come from different runs);
    - NaN/inf weights (a diverged run, or a damaged file).
    """
    rebuild = _rebuild_hint(str(pretrain_meta.get("modality", "<modality>")))
    recorded = pretrain_meta.get(CONTENT_HASH_KEY)
    if recorded is not None:
        header = getattr(encoder_state, "header", {}) or {}
        actual = header.get(CONTENT_HASH_KEY) or tensors_sha256(encoder_state)
        if actual != recorded:
            raise ValueError(
                f"{source}: the weights hash to {actual} but its metadata.json records "
                f"{CONTENT_HASH_KEY} {recorded} (encoder and metadata from different runs); "
                f"{rebuild}"
            )
    bad = [k for k, v in encoder_state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise FloatingPointError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN/inf values ({', '.join(bad[:5])}"
            f"{', ...' if len(bad) > 5 else ''}); the pretraining run diverged or the file is "
            f"damaged: {rebuild}"
        )


def _predictions(
    modality: str, method: str, protocol: str, fraction: float, seed: int,
    labels: np.ndarray, predictions: np.ndarray,
) -> pd.DataFrame:  # fmt: skip
    """One evaluation's test predictions, one row per test example (``example`` = row of
    the test split)."""
    n = len(labels)
    if predictions is None or len(predictions) != n:
        raise ValueError(
            f"{modality}/{method} {protocol} fraction {fraction} seed {seed}: "
            f"{0 if predictions is None else len(predictions)} test predictions for {n} "
            "test examples"
        )
    return pd.DataFrame(
        {
            "modality": modality,
            "method": method,
            "protocol": protocol,
            "fraction": float(fraction),
            "seed": int(seed),
            "example": np.arange(n, dtype=np.int64),
            "label": np.asarray(labels, dtype=np.int64),
            "prediction": np.asarray(predictions, dtype=np.int64),
        },
        columns=list(PREDICTION_COLUMNS),
    )


def _concat_predictions(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(PREDICTION_COLUMNS)]


def finetune_runs(
    encoder: torch.nn.Module,
    num_classes: int,
    train: tuple,
    val: tuple,
    test: tuple,
    runs: list[tuple[int, np.ndarray]],
    settings: dict[str, Any],
    progress: bool,
    runtime: Runtime,
) -> list[FinetuneResult]:
    """Fine-tune ``encoder`` once per ``(seed, train indices)`` of ``runs``, in this process:
    the function :func:`~d2v_pipeline.data2vec.runtime.launch` runs on every data-parallel
    worker (module level: the workers unpickle it by name). ``settings`` is
    ``<m>.finetune.finetune``; each run's ``seed`` is set here."""
    results = []
    for seed, idx in runs:
        cfg = FinetuneConfig(**settings, seed=int(seed))
        subset = _take(train, idx)
        res = finetune(encoder, num_classes, subset, val, test, cfg, progress, runtime=runtime)
        if res.model is not None:  # back through the launcher's queue: CPU tensors only
            res.model = res.model.cpu()
        results.append(res)
    return results


def evaluate_encoder(
    model_input: dict[str, torch.Tensor],
    label_subsets: dict[str, Any],
    dataset_info: dict[str, Any],
    encoder_state: dict[str, torch.Tensor],
    pretrain_meta: dict[str, Any],
    params: dict[str, Any],
    runtime: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Probe and fine-tune one method's encoder at every label fraction and seed.

    ``runtime`` (``<m>.runtime``) places the feature extraction and the fine-tuning runs
    (device, precision; ``nproc_per_node`` > 1 fine-tunes on data-parallel workers).

    Returns:
        tidy metrics rows, details (confusion matrices summed over seeds), the
        fine-tuning validation curves, a 2-D PCA projection of test features, and the
        per-example test predictions of every evaluation (``PREDICTION_COLUMNS``).
    """
    modality, method = dataset_info["modality"], pretrain_meta["method"]
    num_classes = int(dataset_info["num_classes"])
    source = _encoder_source(encoder_state, modality, method)
    check_encoder_weights(encoder_state, pretrain_meta, source)
    encoder = load_encoder(pretrain_meta["config"]["encoder"], encoder_state, modality)
    encoder.eval()
    ev = _evaluation(params, modality)
    rt = runtime_of(runtime, modality)
    pool = ev.probe.pool
    top_k = encoder.depth if ev.probe.top_k is None else ev.probe.top_k
    probe_cfg = {"Cs": ev.probe.Cs, "max_iter": ev.probe.max_iter}
    ft_fractions = ev.fractions if ev.finetune_fractions is None else ev.finetune_fractions
    train, val, test = (_split(model_input, s) for s in ("train", "val", "test"))
    protocols = ev.protocols
    test_y = test[1].numpy()

    probes = {"probe_final": ("final", None), "probe_topk": ("top_k_mean", top_k)}
    sets = {p: spec for p, spec in probes.items() if p in protocols}
    sets["projection"] = ("final", None)  # test-set PCA, same pass
    per_split = [
        _feature_sets(encoder, split, sets, pool, source, name, rt)
        for split, name in zip((train, val, test), SPLITS, strict=True)
    ]
    feats = {p: [f[p] for f in per_split] for p in sets if p != "projection"}
    # every fine-tuning run of this node in one launch (one set of workers under DDP)
    tuned = [
        (fraction, seed)
        for fraction in ev.fractions
        for seed in ev.seeds
        if "finetune" in protocols and fraction in ft_fractions
    ]
    runs = [(seed, subset_indices(label_subsets, f, seed)) for f, seed in tuned]
    settings = ev.finetune.model_dump()
    args = (encoder, num_classes, train, val, test, runs, settings, ev.progress, rt)
    finetuned = dict(zip(tuned, launch(finetune_runs, rt, *args) if runs else [], strict=True))

    rows: list[dict[str, Any]] = []
    confusion: dict[str, dict[str, Any]] = {}
    curves: list[dict[str, Any]] = []
    predictions: list[pd.DataFrame] = []
    # The probe (lbfgs) is deterministic: the seed only picks the labelled subset, and at
    # 100 % every seed's subset is the same list, so its fit is done once and reused.
    probe_results: dict[tuple[str, bytes], ProbeResult] = {}
    for fraction in ev.fractions:
        for seed in ev.seeds:
            idx = subset_indices(label_subsets, fraction, seed)
            for protocol, (ftr, fva, fte) in feats.items():
                key = (protocol, idx.tobytes())
                if key not in probe_results:
                    probe_results[key] = linear_probe(
                        ftr[idx], train[1][idx].numpy(), fva, val[1].numpy(), fte,
                        test[1].numpy(), seed=seed, num_classes=num_classes, **probe_cfg,
                    )  # fmt: skip
                res = probe_results[key]
                metrics = {"accuracy": res.test_accuracy, "macro_f1": res.test_macro_f1}
                rows += _rows(metrics, modality, method, fraction, seed, protocol)
                _add_confusion(confusion, protocol, fraction, res.confusion)
                predictions.append(
                    _predictions(
                        modality, method, protocol, fraction, seed, test_y, res.test_predictions
                    )
                )
            if (fraction, seed) in finetuned:
                res = finetuned[(fraction, seed)]
                metrics = {"accuracy": res.test_accuracy, "macro_f1": res.test_macro_f1}
                rows += _rows(metrics, modality, method, fraction, seed, "finetune")
                _add_confusion(confusion, "finetune", fraction, res.confusion)
                predictions.append(
                    _predictions(
                        modality, method, "finetune", fraction, seed, test_y, res.test_predictions
                    )
                )
                curves += [
                    {"method": method, "fraction": fraction, "seed": seed, **_curve_point(p)}
                    for p in res.curve
                ]
                log.info(
                    "%s/%s finetune %.0f%% seed %d: test acc %.3f (best epoch %s, %s)",
                    modality, method, 100 * fraction, seed, res.test_accuracy,
                    res.best_epoch, res.stop_reason,
                )  # fmt: skip
    projection = _projection(
        per_split[2]["projection"], test[1], method, ev.projection.max_points, ev.projection.seed
    )
    details = {"class_names": dataset_info.get("class_names"), "confusion": {method: confusion}}
    return (
        pd.DataFrame(rows), details, pd.DataFrame(curves), projection,
        _concat_predictions(predictions),
    )  # fmt: skip


def _curve_point(point: dict[str, float]) -> dict[str, float]:
    """A fine-tuning curve point with the report's column names."""
    out = dict(point)
    if "val_acc" in out:
        out["val_accuracy"] = out.pop("val_acc")
    return out


def _rows(
    metrics: dict[str, float], modality: str, method: str, fraction: float, seed: int, protocol: str
) -> list[dict[str, Any]]:
    return tidy_rows(
        metrics, modality=modality, method=method, fraction=float(fraction), seed=int(seed),
        protocol=protocol, include=METRICS,
    )  # fmt: skip


def _add_confusion(store: dict, protocol: str, fraction: float, matrix: list[list[int]]) -> None:
    by_fraction = store.setdefault(protocol, {})
    key = str(float(fraction))
    m = np.asarray(matrix, dtype=np.int64)
    by_fraction[key] = (
        (np.asarray(by_fraction[key]) + m).tolist() if key in by_fraction else m.tolist()
    )


def _projection(
    test_feats: np.ndarray, test_y: torch.Tensor, method: str, max_points: int, seed: int
) -> pd.DataFrame:
    """2-D PCA of mean-pooled final-layer test features (a fixed subsample for readability)."""
    n = len(test_y)
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:max_points])
    feats = np.asarray(test_feats[keep], dtype=np.float64)
    comps = PCA(n_components=2, random_state=0).fit_transform(feats)
    return pd.DataFrame(
        {
            "method": method,
            "component_1": comps[:, 0],
            "component_2": comps[:, 1],
            "label": test_y[torch.from_numpy(keep)].numpy(),
        }
    )


def evaluate_raw_text(
    model_input: dict[str, torch.Tensor],
    label_subsets: dict[str, Any],
    dataset_info: dict[str, Any],
    params: dict[str, Any],
    texts: pd.DataFrame,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """The text raw-input baseline: TF-IDF of the review text + logistic regression."""
    return evaluate_raw_input(model_input, label_subsets, dataset_info, params, texts)


def evaluate_raw_input(
    model_input: dict[str, torch.Tensor],
    label_subsets: dict[str, Any],
    dataset_info: dict[str, Any],
    params: dict[str, Any],
    texts: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """The raw-input baseline (pixels / log-mel statistics / TF-IDF + logistic regression):
    tidy metrics, confusion matrices and per-example test predictions (method
    ``raw_input``, protocol ``raw_probe``).

    calibration.md shows it is strong at this scale; leaving it out would flatter data2vec.
    """
    modality = dataset_info["modality"]
    num_classes = int(dataset_info["num_classes"])
    ev = _evaluation(params, modality)
    cfg = RawBaselineConfig(**ev.raw_baseline.model_dump())
    if modality == "text":
        if texts is None:
            raise ValueError("the text raw-input baseline needs text.texts from ingest")
        inputs = [texts.loc[texts["split"] == s, "text"].astype(str).tolist() for s in SPLITS]
    else:
        inputs = [model_input[f"{s}.x"] for s in SPLITS]
    # Features are unsupervised (TF-IDF vocabulary and idf fitted on all train texts, like
    # pretraining uses all train inputs); only the classifier sees the labelled subset.
    ftr, fva, fte = raw_features(modality, *inputs, cfg=cfg)
    ytr, yva, yte = (model_input[f"{s}.y"].numpy() for s in SPLITS)
    probe_cfg = {"Cs": ev.probe.Cs, "max_iter": ev.probe.max_iter}
    rows: list[dict[str, Any]] = []
    confusion: dict[str, Any] = {}
    predictions: list[pd.DataFrame] = []
    for fraction in ev.fractions:
        for seed in ev.seeds:
            idx = subset_indices(label_subsets, fraction, seed)
            res = linear_probe(
                ftr[idx], ytr[idx], fva, yva, fte, yte, seed=seed, num_classes=num_classes,
                standardize=modality != "text", **probe_cfg,
            )  # fmt: skip
            metrics = {"accuracy": res.test_accuracy, "macro_f1": res.test_macro_f1}
            rows += _rows(metrics, modality, "raw_input", fraction, seed, "raw_probe")
            _add_confusion(confusion, "raw_probe", fraction, res.confusion)
            predictions.append(
                _predictions(
                    modality, "raw_input", "raw_probe", fraction, seed, yte, res.test_predictions
                )
            )
    return pd.DataFrame(rows), {"raw_input": confusion}, _concat_predictions(predictions)


def collect_evaluation(
    dataset_info: dict[str, Any], *results: Any
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Merge the per-method outputs into the modality's tables.

    ``results`` are, per method, (metrics, details, curves, projection, predictions), then
    the raw baseline's (metrics, details, predictions). Returns the merged metrics,
    details, curves, projection and test predictions.
    """
    *methods, raw_metrics, raw_details, raw_predictions = results
    if len(methods) % 5:
        raise ValueError(
            f"collect_evaluation expects 5 outputs per method, got {len(methods)} in total"
        )
    groups = [methods[i : i + 5] for i in range(0, len(methods), 5)]
    metrics = pd.concat([g[0] for g in groups] + [raw_metrics], ignore_index=True)
    confusion: dict[str, Any] = {}
    for g in groups:
        confusion.update(g[1]["confusion"])
    confusion.update(raw_details)
    details = {"class_names": dataset_info.get("class_names"), "confusion": confusion}
    curves = pd.concat([g[2] for g in groups], ignore_index=True)
    projection = pd.concat([g[3] for g in groups], ignore_index=True)
    predictions = _concat_predictions([g[4] for g in groups] + [raw_predictions])
    return metrics, details, curves, projection, predictions
