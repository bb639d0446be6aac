"""Time to accuracy: 10%-label linear-probe accuracy against pretraining wall time, for
data2vec (v1), data2vec 2.0 and masked reconstruction with the same encoder. Not a test.

    python benchmarks/time_to_accuracy.py [--budget 240] [--modalities image speech text]
        [--methods data2vec data2vec2 masked_recon] [--probe-fractions 0.125 0.25 0.5 1]
    python benchmarks/time_to_accuracy.py --resummarise   # recompute the summary only

For each modality and method one run is planned for ``--budget`` seconds: a few timed warm-up
steps estimate seconds per step, the step count (and so the warmup + cosine schedule and the
EMA anneal, kept at the configured fraction of the run) is sized to the budget, and
``pretrain()``'s callback probes the student encoder at the requested points of TRAINING
wall time (probe time is excluded from the axis) and stops the run at the budget. The
random-init encoder (identical for every method: the encoder is built first from the same
seed) is the t = 0 point.

Probe: ``extract_features`` (mean-pooled final-layer output, and the mean of the layer-normed
outputs of every block, K = depth) + ``linear_probe`` on the 10% labelled train subset, C
chosen on the validation split; every probe stores both validation and test accuracy.

Summary (``summary`` in the JSON, :data:`SUMMARY_RULE`): checkpoints ("best" per method) and
"data2vec2's time to data2vec's best" are chosen on VALIDATION accuracy; test accuracy is then
reported at those checkpoints, so the test split never selects anything. ``--resummarise``
recomputes the summary of an existing JSON from its stored probes without rerunning an arm.

Encoder, train and v1 / masked-recon settings come from ``conf/<env>/parameters_pretrain.yml``
(as the pipelines use them); data2vec2 settings come from a ``data2vec2`` block there when the
lead has added one, else from ``V2_DEFAULTS`` below; ``--v2-params`` / ``--v2-train`` (JSON)
override them. Inputs: the ingested ``data/05_model_input/<modality>/`` (run
``kedro run --pipelines ingest`` first). Writes JSON and a PNG (accuracy vs wall time, a panel
per modality, a line per method). The machine may be shared: the load average is recorded at
every probe; compare methods only within one invocation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from d2v_pipeline.io import atomic_path, atomic_write  # noqa: E402

if TYPE_CHECKING:  # torch and the library load only when arms run (not for --resummarise)
    import torch

    from d2v_pipeline.data2vec import PretrainModel

MODALITIES = ("image", "speech", "text")
METHODS = ("data2vec", "data2vec2", "masked_recon")
FEATURES = ("final", "top_k_mean")

# data2vec2 recipe used when conf/ has no data2vec2 block (spec §5 "Rec. for CPU" and
# calibration.md Part 2: 32 x 8 clones, AdamW (0.9, 0.95), lr 1e-3, clip 4, tau 0.99 -> 0.999
# over the first 30%). ``ema_anneal_frac`` is the anneal length as a fraction of the run.
V2_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": {
        "method": {"clones": 8, "ema_decay": 0.99, "ema_end_decay": 0.999},
        "train": {"batch_size": 32, "lr": 2e-3, "betas": [0.9, 0.95], "grad_clip": 4.0},
    },
    "speech": {  # a weak decoder (1 layer, kernel 3) made the encoder learn: 0.18 vs 0.09
        "method": {
            "clones": 4,
            "ema_decay": 0.99,
            "ema_end_decay": 0.999,
            "decoder": {"layers": 1, "kernel": 3},
        },
        "train": {"batch_size": 16, "lr": 1e-3, "betas": [0.9, 0.98], "grad_clip": 4.0},
    },
    "text": {
        "method": {"clones": 4, "ema_decay": 0.99, "ema_end_decay": 0.999},
        "train": {"batch_size": 32, "lr": 1e-3, "betas": [0.9, 0.98], "grad_clip": 1.0},
    },
}
V2_EMA_ANNEAL_FRAC = 0.3


# ---------------------------------------------------------------- inputs


def load_modality(modality: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict]:
    """(dataset_info, arrays, label_subsets) of the ingested modality."""
    from safetensors.torch import load_file

    folder = ROOT / "data" / "05_model_input" / modality
    paths = [folder / n for n in ("dataset_info.json", "arrays.safetensors", "label_subsets.json")]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} is missing: run `kedro run --pipelines ingest` in {ROOT} first"
            )
    info = json.loads(paths[0].read_text())
    return info, load_file(str(paths[1])), json.loads(paths[2].read_text())


def subset_indices(subsets: dict[str, Any], fraction: str, seed: int) -> np.ndarray:
    """Train indices of the labelled subset: {"0.1": [...]} or {"0.1": {"<seed>": [...]}}."""
    if fraction not in subsets:
        raise KeyError(f"label_subsets has no fraction {fraction!r} (has {sorted(subsets)})")
    entry = subsets[fraction]
    if isinstance(entry, dict):
        if str(seed) not in entry:
            raise KeyError(f"label_subsets[{fraction!r}] has no seed {seed} (has {sorted(entry)})")
        entry = entry[str(seed)]
    return np.asarray(entry, dtype=np.int64)


class Prober:
    """10%-label linear probes of an encoder on fixed splits (spec §6 rec. (a))."""

    def __init__(self, arrays: dict[str, torch.Tensor], train_idx: np.ndarray, cs: list[float]):
        import torch

        idx = torch.from_numpy(train_idx)
        self.splits: dict[str, dict[str, torch.Tensor | None]] = {}
        for split in ("train", "val", "test"):
            sel = idx if split == "train" else slice(None)
            am = arrays.get(f"{split}.attention_mask")
            self.splits[split] = {
                "x": arrays[f"{split}.x"][sel],
                "y": arrays[f"{split}.y"][sel],
                "am": None if am is None else am[sel],
            }
        self.cs = cs

    def __call__(self, encoder: torch.nn.Module) -> dict[str, Any]:
        from d2v_pipeline.evaluation import extract_features, linear_probe

        t0 = time.perf_counter()
        out: dict[str, Any] = {}
        for layers in FEATURES:
            feats = {
                s: extract_features(encoder, d["x"], d["am"], layers=layers, batch_size=128)
                for s, d in self.splits.items()
            }
            ys = {s: d["y"].numpy() for s, d in self.splits.items()}
            r = linear_probe(
                feats["train"], ys["train"], feats["val"], ys["val"], feats["test"], ys["test"],
                Cs=self.cs,
            )  # fmt: skip
            out[layers] = {
                "test_accuracy": r.test_accuracy,
                "val_accuracy": r.val_accuracy,
                "chosen_C": r.chosen_C,
                "train_accuracy": r.train_accuracy,
            }
        out["probe_seconds"] = time.perf_counter() - t0
        return out


# ---------------------------------------------------------------- runs
def method_settings(
    modality: str, method: str, params: dict[str, Any], v2_params: dict, v2_train: dict
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(method config dict, train dict, EMA anneal fraction of the run) for one arm."""
    p = params[modality]["pretrain"]
    train = dict(p.get("train", {}))
    if method == "data2vec2" and "data2vec2" not in p:
        d = V2_DEFAULTS[modality]
        method_dict = {**d["method"], **v2_params.get(modality, {})}
        train.update({**d["train"], **v2_train.get(modality, {})})
        frac = V2_EMA_ANNEAL_FRAC
    else:
        method_dict = dict(p.get(method) or {})
        train.update(method_dict.pop("train", None) or {})  # the method's own train overrides
        if method == "data2vec2":
            method_dict.update(v2_params.get(modality, {}))
            train.update(v2_train.get(modality, {}))
        frac = method_dict.get("ema_anneal_end_step", 0) / int(train.get("steps", 2000))
    return method_dict, train, frac


def seconds_per_step(
    modality: str, method: str, enc_cfg: Any, method_dict: dict, train: dict, data: dict
) -> float:
    """Median seconds of a few warm steps of a throwaway model (same settings)."""
    from d2v_pipeline.data2vec import (
        build_pretrain_model,
        method_config_from_dict,
        pretrain,
        train_config_from_dict,
    )

    cfg = train_config_from_dict(
        {**train, "steps": 10, "log_every": 1, "checkpoint_every": 0, "warmup_frac": 0.0}
    )
    mcfg = method_config_from_dict(method, modality, method_dict)
    model = build_pretrain_model(method, enc_cfg, mcfg, seed=0)
    r = pretrain(model, data, cfg, progress=False)
    times = [h["elapsed_s"] for h in r.history]
    return float(np.median(np.diff(times)[2:]))


def run_arm(
    modality: str,
    method: str,
    enc_cfg: Any,
    method_dict: dict[str, Any],
    train: dict[str, Any],
    anneal_frac: float,
    data: dict[str, torch.Tensor],
    prober: Prober,
    budget: float,
    probe_times: list[float],
    log_every: int,
) -> dict[str, Any]:
    """One pretraining run of ``budget`` training seconds, probed at ``probe_times``."""
    from d2v_pipeline.data2vec import (
        build_pretrain_model,
        config_to_dict,
        method_config_from_dict,
        pretrain,
        train_config_from_dict,
    )

    sps = seconds_per_step(modality, method, enc_cfg, method_dict, train, data)
    steps = max(log_every, math.ceil(budget / sps))
    method_dict = dict(method_dict)
    if method.startswith("data2vec"):  # keep the EMA anneal at its fraction of the run
        method_dict["ema_anneal_end_step"] = round(anneal_frac * steps)
    mcfg = method_config_from_dict(method, modality, method_dict)
    cfg = train_config_from_dict(
        {**train, "steps": steps, "log_every": log_every, "checkpoint_every": 0}
    )
    model = build_pretrain_model(method, enc_cfg, mcfg, seed=cfg.seed)
    print(
        f"[{modality}/{method}] ~{sps:.3f} s/step -> {steps} steps for {budget:.0f} s "
        f"(batch {cfg.batch_size}, lr {cfg.lr})",
        flush=True,
    )
    points: list[dict[str, Any]] = []
    pending = sorted(probe_times)
    clock = {"probe": 0.0}

    def callback(step: int, m: PretrainModel) -> bool:
        train_s = time.perf_counter() - t_start - clock["probe"]
        last = step >= steps
        due = bool(pending) and train_s >= pending[0]
        over = train_s >= budget
        if due or last or over:
            while pending and pending[0] <= train_s:
                pending.pop(0)
            t0 = time.perf_counter()
            probe = prober(m.encoder)
            clock["probe"] += time.perf_counter() - t0
            points.append({"train_s": train_s, "step": step, "load1": os.getloadavg()[0], **probe})
            print(
                f"[{modality}/{method}] t={train_s:6.1f}s step {step:5d}: "
                + " ".join(f"{k} {probe[k]['test_accuracy']:.3f}" for k in FEATURES),
                flush=True,
            )
        return over

    t_start = time.perf_counter()
    result = pretrain(model, data, cfg, progress=False, callback=callback)
    train_s = time.perf_counter() - t_start - clock["probe"]
    hist = result.history
    return {
        "modality": modality,
        "method": method,
        "method_config": config_to_dict(mcfg),
        "train_config": config_to_dict(cfg),
        "estimated_s_per_step": sps,
        "measured_s_per_step": train_s / max(1, result.steps),
        "steps_done": result.steps,
        "train_wall_s": train_s,
        "probe_wall_s": clock["probe"],
        "stopped_at_budget": bool(result.info.get("stopped_early")),
        "flops_per_step": result.flops_per_step,
        "collapsed": result.collapsed,
        "final_loss": hist[-1].get("loss") if hist else None,
        "final_target_std": hist[-1].get("target_std") if hist else None,
        "final_pred_std": hist[-1].get("pred_std") if hist else None,
        "points": points,
    }


# ---------------------------------------------------------------- summary and plot
SELECT_ON = "val_accuracy"  # checkpoints and times are chosen on validation, never on test
SUMMARY_RULE = (
    "per method, the checkpoint with the highest validation accuracy (earliest on ties); "
    "'time to v1's best' = first probe at which data2vec2's validation accuracy reaches "
    "data2vec's best validation accuracy; every '<feature>/<metric>' entry reports <metric> "
    "at those checkpoints, so test accuracy is never used to choose"
)


def first_point_reaching(
    points: list[dict], feature: str, metric: str, level: float
) -> dict | None:
    """The earliest probe whose ``feature`` ``metric`` is >= ``level`` (None if none)."""
    for p in sorted(points, key=lambda p: p["train_s"]):
        if p[feature][metric] >= level - 1e-12:
            return p
    return None


def first_time_reaching(
    points: list[dict], feature: str, metric: str, level: float
) -> float | None:
    p = first_point_reaching(points, feature, metric, level)
    return None if p is None else p["train_s"]


def select_checkpoint(points: list[dict], feature: str, on: str = SELECT_ON) -> dict | None:
    """The probe with the best ``on`` accuracy (validation), the earliest on ties."""
    if not points:
        return None
    best = max(p[feature][on] for p in points)
    return first_point_reaching(points, feature, on, best)


def summarise(runs: list[dict], random_init: dict[str, dict]) -> dict[str, Any]:
    """Per modality, feature and reported metric (``<feature>/<metric>``), with every choice
    made on VALIDATION accuracy (:data:`SUMMARY_RULE`):

    ``random_init``; ``best_<method>``: ``metric`` at the method's best-validation checkpoint
    (for ``.../test_accuracy``: its test accuracy there, not the best test accuracy), with
    ``best_<method>_val`` and ``best_<method>_train_s``; and when data2vec and data2vec2 both
    ran: ``v1_best_val`` (data2vec's best validation accuracy), ``v1_time_to_best_s`` (when
    data2vec got there), ``v2_time_to_v1_best_s`` (when data2vec2's validation accuracy
    first reached it; None if never), ``v2_over_v1_time``, ``v1_best`` (``metric`` of data2vec
    at its checkpoint) and ``v2_at_v1_best`` (``metric`` of data2vec2 at its checkpoint).
    """
    out: dict[str, Any] = {}
    for modality in sorted({r["modality"] for r in runs}):
        by = {r["method"]: r for r in runs if r["modality"] == modality}
        entry: dict[str, Any] = {}
        for feature in FEATURES:
            chosen = {m: select_checkpoint(r["points"], feature) for m, r in by.items()}
            chosen = {m: p for m, p in chosen.items() if p is not None}
            v1_point = v2_point = None
            if "data2vec" in chosen and "data2vec2" in by:
                v1_point = chosen["data2vec"]
                v1_level = v1_point[feature][SELECT_ON]
                v2_point = first_point_reaching(
                    by["data2vec2"]["points"], feature, SELECT_ON, v1_level
                )
            for metric in ("test_accuracy", "val_accuracy"):
                row: dict[str, Any] = {
                    "selected_on": SELECT_ON,
                    "random_init": random_init[modality][feature][metric],
                }
                for m, p in chosen.items():
                    row[f"best_{m}"] = p[feature][metric]
                    row[f"best_{m}_val"] = p[feature][SELECT_ON]
                    row[f"best_{m}_train_s"] = p["train_s"]
                if v1_point is not None:
                    t_v1 = v1_point["train_s"]
                    t_v2 = None if v2_point is None else v2_point["train_s"]
                    row.update(
                        {
                            "v1_best_val": v1_point[feature][SELECT_ON],
                            "v1_best": v1_point[feature][metric],
                            "v1_time_to_best_s": t_v1,
                            "v2_time_to_v1_best_s": t_v2,
                            "v2_over_v1_time": None if t_v2 is None else t_v2 / t_v1,
                            "v2_at_v1_best": None
                            if v2_point is None
                            else v2_point[feature][metric],
                        }
                    )
                entry[f"{feature}/{metric}"] = row
        out[modality] = entry
    return out


def resummarise(path: Path) -> dict[str, Any]:
    """Recompute the ``summary`` of an existing result JSON from its stored probes (no
    arm is rerun) and write it back atomically; returns the new document."""
    doc = json.loads(path.read_text())
    doc["summary"] = summarise(doc["runs"], doc["random_init"])
    doc["summary_rule"] = SUMMARY_RULE
    doc["resummarised"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write(path, json.dumps(doc, indent=2) + "\n")
    return doc


def plot(runs: list[dict], random_init: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modalities = [m for m in MODALITIES if any(r["modality"] == m for r in runs)]
    fig, axes = plt.subplots(
        1, len(modalities), figsize=(5.2 * len(modalities), 4.2), squeeze=False
    )
    colours = {"data2vec": "tab:blue", "data2vec2": "tab:red", "masked_recon": "tab:green"}
    for ax, modality in zip(axes[0], modalities, strict=True):
        for r in (r for r in runs if r["modality"] == modality):
            for feature, style in zip(FEATURES, ("-", "--"), strict=True):
                xs = [0.0] + [p["train_s"] for p in r["points"]]
                ys = [random_init[modality][feature]["test_accuracy"]]
                ys += [p[feature]["test_accuracy"] for p in r["points"]]
                ax.plot(
                    xs, ys, style, marker="o", ms=3, color=colours.get(r["method"], "k"),
                    label=f"{r['method']} ({'final' if feature == 'final' else 'top-K mean'})",
                )  # fmt: skip
        ax.set_title(f"{modality}: 10%-label linear probe")
        ax.set_xlabel("pretraining wall time (s, probes excluded)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="base", help="Kedro config env merged over base")
    parser.add_argument("--modalities", nargs="*", default=list(MODALITIES))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--budget", type=float, default=240.0, help="training seconds per run")
    parser.add_argument(
        "--budgets", type=json.loads, default={},
        help='per-modality budgets overriding --budget, JSON e.g. \'{"speech": 300}\'',
    )  # fmt: skip
    parser.add_argument(
        "--probe-fractions", type=float, nargs="*", default=[0.125, 0.25, 0.5, 1.0],
        help="probe points as fractions of the budget (the end of the run is always probed)",
    )  # fmt: skip
    parser.add_argument("--fraction", default="0.1", help="label_subsets key of the probe")
    parser.add_argument("--subset-seed", type=int, default=0, help="per-seed label subsets only")
    parser.add_argument("--cs", type=float, nargs="*", default=[1e-3, 1e-2, 1e-1, 1.0, 10.0])
    parser.add_argument(
        "--threads", type=int, default=2,
        help="torch threads for training and probes (1 is far steadier on a shared machine)",
    )  # fmt: skip
    parser.add_argument("--log-every", type=int, default=5, help="callback granularity (steps)")
    parser.add_argument("--v2-params", type=json.loads, default={}, help="JSON {modality: {...}}")
    parser.add_argument("--v2-train", type=json.loads, default={}, help="JSON {modality: {...}}")
    parser.add_argument("--tag", default="", help="free text stored in the JSON")
    parser.add_argument(
        "--append", action="store_true",
        help="keep the runs already in --out except the (modality, method) pairs rerun now",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "time_to_accuracy.json"
    )
    parser.add_argument(
        "--resummarise", action="store_true",
        help="only recompute the summary of the existing --out JSON (no arm is rerun)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.resummarise:
        if not args.out.is_file():
            parser.error(f"--resummarise: {args.out} does not exist")
        print(json.dumps(resummarise(args.out)["summary"], indent=2))
        print(f"rewrote the summary of {args.out}")
        return
    import torch

    from d2v_pipeline.data2vec import build_pretrain_model, method_config_from_dict
    from d2v_pipeline.experiment import (
        encoder_config,
        environment,
        load_parameters,
        pretraining_data,
    )

    for m in args.modalities:
        if m not in MODALITIES:
            parser.error(f"unknown modality {m!r}; expected {MODALITIES}")
    for m in args.methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; expected {METHODS}")
    torch.set_num_threads(args.threads)
    params = load_parameters(ROOT / "conf", args.env)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    runs: list[dict[str, Any]] = []
    random_init: dict[str, dict] = {}
    loads: list[dict[str, Any]] = []
    if args.append and args.out.is_file():
        old = json.loads(args.out.read_text())
        rerun = {(m, k) for m in args.modalities for k in args.methods}
        runs = [r for r in old["runs"] if (r["modality"], r["method"]) not in rerun]
        random_init = old["random_init"]  # recomputed (identical) for the rerun modalities
        loads = old["load"]
    loads.append({"when": f"start {' '.join(args.modalities)}", "loadavg": os.getloadavg()})
    for modality in args.modalities:
        info, arrays, subsets = load_modality(modality)
        p = params[modality]["pretrain"]
        enc_cfg = encoder_config(info, p.get("encoder", {}))
        data = pretraining_data(arrays)
        prober = Prober(arrays, subset_indices(subsets, args.fraction, args.subset_seed), args.cs)
        budget = float(args.budgets.get(modality, args.budget))
        probe_times = [f * budget for f in args.probe_fractions]
        settings = {
            m: method_settings(modality, m, params, args.v2_params, args.v2_train)
            for m in args.methods
        }
        # built with the first arm's own settings (a default method config may not fit the
        # encoder: top_k > depth); the encoder is built first, so it is the same for every arm
        first = args.methods[0]
        first_cfg = method_config_from_dict(first, modality, settings[first][0])
        init = build_pretrain_model(first, enc_cfg, first_cfg, seed=0)
        random_init[modality] = prober(init.encoder)
        print(
            f"[{modality}] random init: "
            + " ".join(f"{k} {random_init[modality][k]['test_accuracy']:.3f}" for k in FEATURES),
            flush=True,
        )
        for method in args.methods:
            method_dict, train, frac = settings[method]
            runs.append(
                run_arm(
                    modality, method, enc_cfg, method_dict, train, frac, data, prober, budget,
                    probe_times, args.log_every,
                )
            )  # fmt: skip
            runs[-1]["invocation"] = {"started": started, "args": args_json}
            loads.append({"when": f"after {modality}/{method}", "loadavg": os.getloadavg()})
        summary = summarise(runs, random_init)
        out = {
            "benchmark": "time_to_accuracy",
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tag": args.tag,
            "args": args_json,  # of the last invocation; each run keeps its own
            "host": environment(),
            "load": loads,
            "note": "load = os.getloadavg() on a 2-core machine shared with other jobs; "
            "timings are comparable only within one invocation",
            "random_init": random_init,
            "runs": runs,
            "summary_rule": SUMMARY_RULE,
            "summary": summary,
        }
        atomic_write(args.out, json.dumps(out, indent=2) + "\n")  # after every modality
        plot(runs, random_init, args.out.with_suffix(".png"))
    print(json.dumps(summarise(runs, random_init), indent=2))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
