"""Distributed tests: real worker processes started by ``runtime.launch`` (torch elastic,
gloo, one thread per process), tiny models, a few steps.

The worker functions live in ``ddp_cases.py`` and ``runtime_probes.py`` next to this file:
spawned workers unpickle them by module name from the ``sys.path`` they inherit (pytest puts
this folder on it). Every process start costs seconds (importing torch), so each launch
trains several cases or serves several tests (module-scoped fixtures).
"""

from __future__ import annotations

import os

for _key, _value in {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",
    "MPLBACKEND": "Agg",
}.items():
    os.environ.setdefault(_key, _value)
