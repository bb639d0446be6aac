"""Pretrain one encoder from the command line, e.g. on several GPUs or machines with torchrun.

    python -m d2v_pipeline.train --modality image --method data2vec2 [--env smoke]
        [--params image.runtime.device=cuda,image.runtime.precision=bf16]
    torchrun --nproc-per-node 8 -m d2v_pipeline.train --modality image --method data2vec2
    srun torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint $head:29500 -m d2v_pipeline.train --modality image --method data2vec2

It is the Kedro node ``<modality>.pretrain_<method>`` without ``kedro run``: the parameters
are loaded as ``kedro run --env <env> --params ...`` loads them (and validated the same way,
before anything else), the ingested data come from the catalog, the training is the node's
own code (:mod:`d2v_pipeline.pipelines.pretrain.nodes`), and rank 0 saves the node's outputs
(encoder, metadata, history) through the catalog, with the resumable training state in the
node's ``<state_dir>/<method>/<run key>``. A later ``kedro run`` or ``dvc repro`` with the same
parameters therefore finds that state finished and reuses it (0 steps) instead of training.

Under torchrun the world size comes from torchrun (``<m>.runtime.nproc_per_node`` is not
used); run it from the project folder, like ``kedro run`` (``state_dir`` is relative to it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODALITIES = ("image", "speech", "text")
METHODS = ("data2vec", "data2vec2", "masked_recon")
OUTPUTS = ("encoder", "pretrain_meta", "pretrain_history")


def parse_params(text: str | None) -> dict[str, Any]:
    """``a.b=1,c=x`` as the nested dict ``kedro run --params`` makes of it (values typed as
    in YAML: ``1`` an integer, ``true`` a boolean)."""
    from omegaconf import OmegaConf

    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--params: {item!r} is not key=value")
    return OmegaConf.to_container(OmegaConf.from_dotlist(items)) if items else {}


def _rank() -> int:
    """This process's rank in a torchrun job (0 outside one)."""
    return int(os.environ.get("RANK", "0"))


def _parser() -> argparse.ArgumentParser:
    summary, _, details = (__doc__ or "").partition("\n\n")
    parser = argparse.ArgumentParser(
        prog="python -m d2v_pipeline.train",
        description=summary,
        epilog=details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--modality", required=True, choices=MODALITIES, help="the lane")
    parser.add_argument("--method", required=True, choices=METHODS, help="pretraining method")
    parser.add_argument(
        "--env", default=None, help="Kedro environment, as `kedro run --env` (default: local)"
    )
    parser.add_argument(
        "--params",
        default=None,
        help="parameter overrides, as `kedro run --params`: key=value pairs separated by "
        "commas, dotted keys (image.pretrain.train.steps=100,image.runtime.precision=bf16); "
        "pass the same to the later `kedro run`, or the run key differs and it trains again",
    )
    parser.add_argument(
        "--project", type=Path, default=None, help="the Kedro project (default: found from .)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, and (rank 0) save the outputs; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        params = parse_params(args.params)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.utils import find_kedro_project

    from d2v_pipeline.data2vec.config_base import ConfigError
    from d2v_pipeline.experiment import pretraining_data
    from d2v_pipeline.pipelines.pretrain.nodes import (
        plan_pretraining,
        pretrain_outputs,
        run_pretraining,
    )
    from d2v_pipeline.schema import ParameterError

    project = args.project or find_kedro_project(Path.cwd())
    if project is None:
        print(f"error: no Kedro project at or above {Path.cwd()} (use --project)", file=sys.stderr)
        return 2
    project = Path(project).resolve()
    bootstrap_project(project)
    m, method = args.modality, args.method
    create = {"project_path": project, "env": args.env, "runtime_params": params or None}
    try:
        with KedroSession.create(**create) as session:  # (it configures the logging)
            if _rank() != 0:  # one rank reports; the others speak only of problems
                logging.disable(logging.INFO)
            context = session.load_context()  # the parameters are validated here, first
            catalog = context.catalog
            lane = context.params[m]
            dataset_info = catalog.load(f"{m}.dataset_info")
            plan = plan_pretraining(method, dataset_info, lane["pretrain"], lane.get("runtime"))
            if "WORLD_SIZE" in os.environ and plan.runtime.nproc_per_node > 1:
                log.info("under torchrun: %s.runtime.nproc_per_node is not used", m)
            data = pretraining_data(catalog.load(f"{m}.model_input"))
            result = run_pretraining(plan, data)
            if _rank() != 0:
                return 0
            outputs = pretrain_outputs(plan, result, dataset_info)
            for name, value in zip(OUTPUTS, outputs, strict=True):
                catalog.save(f"{m}.{method}.{name}", value)
    except (ParameterError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    resumed = result.resumed_from_step
    print(
        f"{m}/{method}: {result.steps} steps"
        + (f" (resumed from step {resumed})" if resumed is not None else "")
        + f", world size {result.info.get('world_size', 1)}; saved "
        + ", ".join(f"{m}.{method}.{name}" for name in OUTPUTS)
        + f"; training state {plan.state_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
