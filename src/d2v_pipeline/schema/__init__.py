"""One schema for every parameter of the pipeline (pydantic models, unknown keys refused).

- :mod:`.base`: strict blocks, value ranges, library-backed defaults.
- :mod:`.ingest`, :mod:`.pretrain`, :mod:`.finetune`, :mod:`.tune`, :mod:`.report`: the blocks
  of each ``conf/base/parameters_<stage>.yml``.
- :mod:`.params`: the whole tree (``image``, ``speech``, ``text``, ``report``) and the rules
  that span stages.
- :mod:`.check`: problems with their key path and the file that set the key.
- :mod:`.docs`: docs/parameters.md, generated (``python -m d2v_pipeline.schema --write``).

``kedro run`` validates the merged parameters once, before any node runs
(:class:`d2v_pipeline.hooks.ParameterHooks`). The library's dataclass configs remain the
library's API; this schema is the pipeline's boundary.
"""

from d2v_pipeline.schema.check import (
    ParameterError,
    ParameterSources,
    Problem,
    check_parameters,
    find_problems,
)
from d2v_pipeline.schema.params import MODALITIES, Parameters

__all__ = [
    "MODALITIES",
    "ParameterError",
    "ParameterSources",
    "Parameters",
    "Problem",
    "check_parameters",
    "find_problems",
]
