"""Kedro project settings.

Parameters and catalogs merge *softly* across environments: conf/smoke (or a
user's conf/local) overrides only the keys it names, instead of replacing a
whole top-level block such as ``image:`` (Kedro's default is destructive).
"""

from kedro.config import OmegaConfigLoader

from d2v_pipeline.hooks import ParameterHooks, ProgressHooks, RunInfoHooks

# ParameterHooks first: a run with bad parameters stops before any other hook writes
HOOKS = (ParameterHooks(), RunInfoHooks(), ProgressHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}
