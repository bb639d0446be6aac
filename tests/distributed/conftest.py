"""Distributed tests: real worker processes started by ``runtime.launch`` (torch elastic,
gloo, one thread per process), tiny models, a few steps.

The worker functions live in ``ddp_cases.py`` and ``runtime_probes.py`` next to this file:
spawned workers unpickle them by module name from the ``sys.path`` they inherit (pytest puts
this folder on it). Every process start costs seconds (importing torch), so each launch
trains several cases or serves several tests (module-scoped fixtures). The workers inherit
the environment the root conftest sets (telemetry off, Agg backend).
"""
