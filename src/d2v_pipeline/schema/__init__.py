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

from __future__ import annotations

import importlib
from typing import Any

# Exported names and their modules, imported on first use: ``d2v_pipeline.schema.pretrain``
# (which a pipeline's nodes may import) must not pull in ``params`` -> ``tune``, whose library
# dataclasses live in the tune pipeline package, which imports those nodes.
_EXPORTS = {
    "MODALITIES": "params",
    "Parameters": "params",
    "ParameterError": "check",
    "ParameterSources": "check",
    "Problem": "check",
    "check_parameters": "check",
    "find_problems": "check",
    "validated": "check",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
