"""Tuning: an Optuna study per modality over data2vec's EMA decays, mask ratio and top-K.

One trial pretrains data2vec at a reduced budget with suggested values and is scored by a
linear probe on the validation split only; intermediate probes feed a pruner. The modules,
one concern each (each imports only those above it):

- ``config``: the ``<m>.tune`` parameter block, validated into a ``TuneConfig``; sampler and
  pruner factories.
- ``knobs``: knob values (full-run units) <-> Optuna parameters; a trial's pretrain params
  (spec §2 short-run rule); the best-params document.
- ``probe``: the validation-halves probe that scores a trial's encoder.
- ``storage``: storage URLs, the journal file, the trial-count lock, which trials count,
  stale trials.
- ``study``: open and check a study, the study loop, one trial.
- ``export``: the trials table, the summary and the figures.
- ``nodes`` / ``pipeline``: the Kedro glue.
"""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
