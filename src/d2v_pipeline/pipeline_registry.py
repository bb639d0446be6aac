"""Project pipelines.

Each folder under ``pipelines/`` defines one stage (ingest, pretrain, finetune,
tune, report) as three namespaced lanes (image, speech, text). ``__default__``
is the complete experiment, ingest -> pretrain -> finetune -> report, without
the expensive ``tune`` pipeline, which runs only when asked for
(``kedro run --pipeline tune``).
"""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

NOT_IN_DEFAULT = ("tune",)


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines: each stage by name, and ``__default__``."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in NOT_IN_DEFAULT), Pipeline([])
    )
    return pipelines
