"""Generate dvc.yaml from the Kedro pipelines and catalog, and check it for drift.

``dvc.yaml`` is never written by hand: every DVC stage is one Kedro slice
(``kedro run --pipelines <p> [--namespaces <m>]``) and its deps, params and outs are read
off the Kedro objects that the slice runs:

- stages: one per registered pipeline that is part of ``__default__`` (``tune`` is not),
  split per top-level namespace when all its nodes are namespaced (image, speech, text); a
  pipeline with top-level nodes (``report``, which joins the lanes) is one stage;
  per-namespace stages that are identical up to the namespace become one ``foreach`` group
  (``pretrain@image``), the others stay explicit (``ingest-text``: text has a tokenizer);
- outs: the catalog file of every dataset the slice's nodes write (factory patterns such
  as ``{modality}.{method}.encoder`` resolved by the catalog). MemoryDatasets are not
  outs, folder handles (DirectoryDataset, e.g. a tune study folder) are neither deps nor
  outs, run bookkeeping (``node_timings``, ``run_info``) is ignored;
- catalog paths start with ``${globals:data_root}``: they resolve with the generated env's
  globals (``data/`` for base, so the committed dvc.yaml names ``data/...``);
- side outputs: files a node writes itself outside the catalog, located by a parameter
  (the speech synthesis cache) are ``persist: true`` outs, so DVC versions them but never
  deletes them before a run (the reader's own hash decides whether to re-synthesise);
- deps: the code the slice runs (static import closure of its node functions and dataset
  classes, as package folders) and the catalog files it reads that it does not write;
- params: the exact ``params:<key>`` inputs of its nodes, pointed at every conf file of the
  environment that defines the key; ``parameters`` (all of them) and the base-parameters
  dataset track whole files; of a block whose other keys only say how a run executes
  (``<m>.runtime``), just the keys that change what it computes (``precision``);
- metrics / plots: chosen datasets become ``cache: false`` metrics and plots (git-tracked).

``python -m d2v_pipeline.dvc_sync`` writes dvc.yaml; ``--check`` exits 1 naming every
difference when the file on disk is stale. ``--env smoke`` generates the smoke variant
(commands get ``--env smoke``; params point at conf/base and conf/smoke).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import importlib.util
import logging
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from d2v_pipeline.io import atomic_write

log = logging.getLogger(__name__)

HEADER = """\
# GENERATED from the Kedro pipelines and catalog by `python -m d2v_pipeline.dvc_sync{env_flag}`:
# do not edit by hand; regenerate after changing pipelines or catalogs, and check with
# `python -m d2v_pipeline.dvc_sync{env_flag} --check` (fails naming any difference).
# Each stage runs one Kedro slice; `kedro run` and `dvc repro` write the same files.
# Not tracked on purpose: data/**/train_state (resumable scratch, keyed by a config hash),
# data/09_tracking/node_timings.json (run bookkeeping), conf/local (dvc repro uses --env).
"""


class DvcSyncError(ValueError):
    """The Kedro project cannot be mapped onto DVC stages (the message names the culprit)."""


@dataclass(frozen=True)
class PlotSpec:
    """How ``dvc plots`` draws one CSV: columns for x and y, and an optional template."""

    x: str
    y: str
    template: str | None = None


@dataclass(frozen=True)
class SideOutput:
    """Files a node writes itself, outside the catalog, in a folder named by a parameter.

    Attributes:
        params: the node's un-namespaced parameters input (``ingest`` for
            ``params:speech.ingest``).
        dir_key: dotted key inside that block holding the folder (``espeak.cache_dir``).
        files: file names the node writes in that folder.
        when: only when these keys of the block have these values (``source: espeak``).
        persist: DVC must not delete them before the stage runs (a reusable cache).
    """

    params: str
    dir_key: str
    files: tuple[str, ...]
    when: tuple[tuple[str, Any], ...] = ()
    persist: bool = True


@dataclass(frozen=True)
class SyncConfig:
    """What the generator needs to know beyond the Kedro objects themselves."""

    env: str = "base"
    dvc_file: str = "dvc.yaml"
    default_pipeline: str = "__default__"
    kedro_cmd: str = "kedro run"
    # Catalog datasets (fnmatch on the full name) reported as DVC metrics / plots. They are
    # `cache: false`, i.e. committed to git, so `dvc metrics diff` / `dvc plots diff` can
    # read any revision without the DVC cache.
    metrics: tuple[str, ...] = ("report_metrics",)
    plots: tuple[tuple[str, PlotSpec], ...] = (
        ("label_efficiency", PlotSpec(x="fraction", y="accuracy_mean", template="scatter")),
        ("*.pretrain_history", PlotSpec(x="step", y="loss")),
    )
    # Written on every run by a hook: never a dep or an out (it would make every stage stale).
    bookkeeping: tuple[str, ...] = ("node_timings", "run_info")
    # Folder handles a node manages itself (resumable training state): neither dep nor out.
    scratch_types: tuple[str, ...] = ("d2v_pipeline.datasets.DirectoryDataset",)
    # Datasets that read conf/base parameters: tracked as whole conf/base params files.
    base_params_types: tuple[str, ...] = ("d2v_pipeline.datasets.BaseParametersDataset",)
    # Parameter blocks (un-namespaced name) of which a stage depends on some keys only. The
    # runtime block: precision changes the weights (and is part of pretraining's run key);
    # device, compile, nproc_per_node, threads, workers and timeout_s only say where and how
    # the same computation runs (rounding as on another machine, dropout draws per rank),
    # and a finished training state is reused whichever of them ran it (a torchrun job's
    # state serves `dvc repro`), so changing them must not make a stage stale.
    tracked_keys: tuple[tuple[str, tuple[str, ...]], ...] = (("runtime", ("precision",)),)
    side_outputs: tuple[SideOutput, ...] = (
        SideOutput(
            params="ingest",
            dir_key="espeak.cache_dir",
            files=("clips.safetensors", "clips.json"),
            when=(("source", "espeak"),),
        ),
    )
    code_package: str = "d2v_pipeline"
    base_env: str = "base"
    conf_source: str = "conf"
    quiet: bool = False  # silence Kedro's INFO logs while loading the project (CLI)


@dataclass
class StageSpec:
    """One Kedro slice as a DVC stage, before templating."""

    pipeline: str
    namespace: str | None
    cmd: str
    code_deps: list[str] = field(default_factory=list)
    data_deps: list[str] = field(default_factory=list)
    params: dict[str, list[str] | None] = field(default_factory=dict)
    outs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    plots: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, str] = field(default_factory=dict)  # path -> dataset name (messages)

    @property
    def name(self) -> str:
        return self.pipeline if self.namespace is None else f"{self.pipeline}@{self.namespace}"

    def to_dvc(self) -> dict[str, Any]:
        """The stage as dvc.yaml writes it (keys in DVC's usual order)."""
        label = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        stage: dict[str, Any] = {
            "desc": f"kedro pipeline {self.pipeline}, {label}",
            "cmd": self.cmd,
        }
        deps = self.code_deps + self.data_deps
        if deps:
            stage["deps"] = deps
        if self.params:
            stage["params"] = [{f: keys} for f, keys in self.params.items()]
        for key, entries in (("outs", self.outs), ("metrics", self.metrics)):
            if entries:
                stage[key] = [{p: dict(o)} if o else p for p, o in entries.items()]
        if self.plots:
            stage["plots"] = [{p: dict(o)} for p, o in self.plots.items()]
        return stage


# --------------------------------------------------------------------------- code deps


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports_of(module: str, path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``module`` imports anywhere (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    anchor = module if is_pkg else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), anchor)
            else:
                base = node.module or ""
            found.add(base)
            # `from pkg import sub` imports the submodule `pkg.sub` when it is one
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if (m == package or m.startswith(package + ".")) and _module_file(m)}


def import_closure(modules: Iterable[str], package: str) -> set[str]:
    """Every module of ``package`` reachable from ``modules`` by (static) imports."""
    todo = [m for m in modules if m == package or m.startswith(package + ".")]
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(mod)
        if path is not None:
            todo.extend(_imports_of(mod, path, package) - seen)
    return seen


def code_dependencies(modules: Iterable[str], package: str, source_dir: str) -> list[str]:
    """The import closure of ``modules`` as dvc deps: sub-package folders and module files.

    A module inside a sub-package is represented by the sub-package folder (a pipeline by
    its own folder under ``pipelines/``), a top-level module by its file; paths are
    ``<source_dir>/<package>/...`` so they hold for any checkout of the project.
    """
    pkg_file = _module_file(package)
    if pkg_file is None:
        raise DvcSyncError(f"package {package!r} is not importable")
    pkg_dir = pkg_file.parent
    deps: set[str] = set()
    for mod in import_closure(modules, package):
        path = _module_file(mod)
        if path is None:
            continue
        parts = path.relative_to(pkg_dir).parts
        if len(parts) == 1:
            if parts[0] != "__init__.py":  # the root package init holds only the version
                deps.add(parts[0])
        elif parts[0] == "pipelines" and len(parts) > 2:
            deps.add(f"pipelines/{parts[1]}")
        elif parts[0] != "pipelines":
            deps.add(parts[0])
    return sorted(f"{source_dir}/{package}/{d}" for d in deps)


# --------------------------------------------------------------------------- params


def _get_path(data: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return False, None
        data = data[part]
    return True, data


def parameter_files(project: Path, config: SyncConfig, patterns: Sequence[str]) -> list[Path]:
    """Parameter files Kedro merges for ``config.env``: base first, then the run env."""
    envs = [config.base_env] if config.env == config.base_env else [config.base_env, config.env]
    files: list[Path] = []
    for env in envs:
        env_dir = project / config.conf_source / env
        if not env_dir.is_dir():
            raise DvcSyncError(f"--env {env}: no folder {env_dir}")
        found = {
            p
            for pattern in patterns
            for p in env_dir.glob(pattern)
            if p.is_file() and p.suffix in (".yml", ".yaml", ".json")
        }
        files.extend(sorted(found))
    return files


def _load_params_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DvcSyncError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DvcSyncError(f"{path}: expected a mapping of parameters, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- stages


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _filepath(dataset: Any) -> str | None:
    path = getattr(dataset, "_filepath", None)
    if path is None:
        try:
            path = dataset._describe().get("filepath")
        except Exception:  # a dataset whose description fails simply has no file
            path = None
    return None if path is None else str(path)


def _rel(path: str, project: Path) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(project)
        except ValueError as exc:
            raise DvcSyncError(
                f"catalog path {path} is outside the project {project}: DVC outs must live "
                "inside the repository"
            ) from exc
    return p.as_posix()


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


class _Builder:
    """Turns the loaded Kedro project into StageSpecs."""

    def __init__(self, project: Path, config: SyncConfig) -> None:
        from kedro.framework.project import pipelines
        from kedro.framework.session import KedroSession
        from kedro.framework.startup import bootstrap_project

        self.project = project
        self.config = config
        metadata = bootstrap_project(project)
        if config.quiet:  # bootstrap (re)configures Kedro's logging at INFO
            logging.getLogger("kedro").setLevel(logging.WARNING)
        self.source_dir = Path(metadata.source_dir).resolve().relative_to(project).as_posix()
        self.param_files: list[Path] = []
        self._session: Any = None
        try:
            self._session = KedroSession.create(project_path=project, env=config.env)
            context = self._session.load_context()
            self.catalog = context.catalog
            self.params = context.params
            patterns = context.config_loader.config_patterns["parameters"]
            self.pipelines = dict(pipelines)
        except Exception as exc:  # registry/config errors: say which project and env failed
            self.close()
            raise DvcSyncError(
                f"cannot load the Kedro project at {project} (env {config.env}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.param_files = parameter_files(project, config, patterns)
        self._file_data = {p: _load_params_file(p) for p in self.param_files}

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    # -- slicing

    def slices(self) -> list[tuple[str, str | None, Any]]:
        """(pipeline name, namespace, sliced pipeline) for every stage, in run order."""
        cfg = self.config
        if cfg.default_pipeline not in self.pipelines:
            raise DvcSyncError(f"no registered pipeline {cfg.default_pipeline!r}")
        default = self.pipelines[cfg.default_pipeline]
        in_default = {n.name for n in default.nodes}
        members: dict[str, Any] = {}
        for name, pipe in self.pipelines.items():
            names = {n.name for n in pipe.nodes}
            if name != cfg.default_pipeline and names and names <= in_default:
                members[name] = pipe  # not e.g. `tune`: registered but not in the default run
        covered = {n.name for p in members.values() for n in p.nodes}
        if missing := sorted(in_default - covered):
            raise DvcSyncError(
                f"nodes of {cfg.default_pipeline!r} in no registered pipeline: {missing}"
            )
        found: list[tuple[str, str | None, Any]] = []
        for name in _pipeline_order(members):
            pipe = members[name]
            namespaces = {n.namespace.split(".")[0] if n.namespace else None for n in pipe.nodes}
            if None in namespaces:  # top-level nodes (maybe beside namespaced ones): one stage
                namespaces = {None}
            for ns in sorted(namespaces, key=lambda x: x or ""):
                found.append(
                    (name, ns, pipe if ns is None else pipe.only_nodes_with_namespaces([ns]))
                )
        return found

    # -- one stage

    def _dataset(self, name: str) -> Any:
        try:
            return self.catalog.get(name)
        except Exception as exc:
            raise DvcSyncError(f"catalog: dataset {name!r} cannot be resolved: {exc}") from exc

    def _param_keys(self, key: str, where: str) -> dict[Path, str]:
        hits = {f: key for f, data in self._file_data.items() if _get_path(data, key)[0]}
        if not hits:
            files = ", ".join(str(f.relative_to(self.project)) for f in self.param_files)
            raise DvcSyncError(f"params:{key} ({where}) is defined in none of: {files}")
        return hits

    def _tracked(self, key: str, node: Any) -> list[str]:
        """The keys of a node's ``params:<key>`` input that its stage depends on: the whole
        block, or for a block named in ``tracked_keys`` just those of its keys."""
        short = key.split(".", 1)[1] if node.namespace and "." in key else key
        subkeys = dict(self.config.tracked_keys).get(short)
        return [key] if subkeys is None else [f"{key}.{sub}" for sub in subkeys]

    def stage(self, pipe_name: str, namespace: str | None, sub: Any) -> StageSpec:
        cfg = self.config
        env_flag = f"--env {cfg.env}"
        cmd = f"{cfg.kedro_cmd} {env_flag} --pipelines {pipe_name}"
        if namespace:
            cmd += f" --namespaces {namespace}"
        spec = StageSpec(pipe_name, namespace, cmd)
        modules: set[str] = set()
        params: dict[Path, set[str] | None] = {}

        def track_whole(files: Iterable[Path]) -> None:
            for f in files:
                if self._file_data[f]:  # an empty file has nothing to track
                    params[f] = None

        def track_key(key: str, where: str) -> None:
            for f, k in self._param_keys(key, where).items():
                if f in params and params[f] is None:
                    continue
                params.setdefault(f, set()).add(k)  # type: ignore[union-attr]

        for node in sub.nodes:
            func = node.func
            while hasattr(func, "func"):  # functools.partial
                func = func.func
            modules.add(getattr(func, "__module__", "") or "")
            for inp in node.inputs:
                if inp == "parameters":
                    track_whole(self.param_files)
                elif inp.startswith("params:"):
                    for key in self._tracked(inp.removeprefix("params:"), node):
                        track_key(key, f"node {node.name}")
            self._side_outputs(node, spec)

        outputs = set(sub.all_outputs())
        for name in sorted(outputs | set(sub.inputs())):
            if name == "parameters" or name.startswith("params:"):
                continue
            ds = self._dataset(name)
            if ds is not None and _type_name(ds).startswith(cfg.code_package + "."):
                modules.add(type(ds).__module__)
            if name in cfg.bookkeeping:
                continue
            tname = _type_name(ds) if ds is not None else "MemoryDataset"
            if tname in cfg.scratch_types:
                continue
            if tname in cfg.base_params_types:
                base_dir = self.project / cfg.conf_source / cfg.base_env
                base = [p for p in self.param_files if p.is_relative_to(base_dir)]
                track_whole(base)
                continue
            path = _filepath(ds) if ds is not None else None
            if path is None:
                if name not in outputs:
                    raise DvcSyncError(
                        f"stage {spec.name}: input {name!r} is a {tname.rpartition('.')[2]} "
                        "with no file: another Kedro slice cannot hand it over; give it a "
                        "catalog entry with a filepath"
                    )
                continue  # in-memory hand-over inside this slice
            rel = _rel(path, self.project)
            spec.datasets[rel] = name
            if name not in outputs:
                spec.data_deps.append(rel)
            elif _matches(name, cfg.metrics):
                spec.metrics[rel] = {"cache": False}
            elif plot := next((p for pat, p in cfg.plots if fnmatch.fnmatchcase(name, pat)), None):
                props: dict[str, Any] = {"cache": False, "x": plot.x, "y": plot.y}
                if plot.template:
                    props["template"] = plot.template
                spec.plots[rel] = props
            else:
                spec.outs[rel] = {}
        spec.code_deps = code_dependencies(modules, cfg.code_package, self.source_dir)
        spec.data_deps.sort()
        spec.outs = dict(sorted(spec.outs.items()))
        base_first = {f: i for i, f in enumerate(self.param_files)}
        spec.params = {
            f.relative_to(self.project).as_posix(): None if keys is None else _minimal(keys)
            for f, keys in sorted(params.items(), key=lambda kv: base_first[kv[0]])
        }
        return spec

    def _side_outputs(self, node: Any, spec: StageSpec) -> None:
        for side in self.config.side_outputs:
            for inp in node.inputs:
                key = inp.removeprefix("params:")
                short = key.split(".", 1)[1] if node.namespace and "." in key else key
                if not inp.startswith("params:") or short != side.params:
                    continue
                ok, block = _get_path(self.params, key)
                if not ok or not all(_get_path(block, k) == (True, v) for k, v in side.when):
                    continue
                found, folder = _get_path(block, side.dir_key)
                if not found or not folder:
                    raise DvcSyncError(f"params:{key}.{side.dir_key} is missing or empty")
                for fname in side.files:
                    rel = _rel(str(Path(str(folder)) / fname), self.project)
                    spec.outs[rel] = {"persist": True} if side.persist else {}
                    spec.datasets[rel] = f"{key}.{side.dir_key}/{fname} (written by {node.name})"


def _pipeline_order(pipes: Mapping[str, Any]) -> list[str]:
    """Pipeline names so that producers come before consumers (ties: alphabetical)."""
    outputs = {name: set(p.all_outputs()) for name, p in pipes.items()}
    needs = {
        name: {o for o in pipes if o != name and outputs[o] & set(p.inputs())}
        for name, p in pipes.items()
    }
    order: list[str] = []
    while needs:
        ready = sorted(n for n, deps in needs.items() if deps <= set(order))
        if not ready:
            raise DvcSyncError(f"pipelines depend on each other in a cycle: {sorted(needs)}")
        order.append(ready[0])
        del needs[ready[0]]
    return order


def _minimal(keys: set[str]) -> list[str]:
    """Drop keys already covered by a parent key (``image.pretrain`` covers its subkeys)."""
    return sorted(k for k in keys if not any(k.startswith(o + ".") for o in keys if o != k))


# --------------------------------------------------------------------------- documents


def _template(obj: Any, token: str) -> Any:
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(token)}(?![A-Za-z0-9_])")
    if isinstance(obj, str):
        return pattern.sub("${item}", obj)
    if isinstance(obj, dict):
        return {_template(k, token): _template(v, token) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_template(v, token) for v in obj]
    return obj


def _expand(obj: Any, item: str) -> Any:
    if isinstance(obj, str):
        return obj.replace("${item}", item)
    if isinstance(obj, dict):
        return {_expand(k, item): _expand(v, item) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand(v, item) for v in obj]
    return obj


def assemble(specs: Sequence[StageSpec]) -> dict[str, Any]:
    """The dvc.yaml document: namespaced stages that differ only by namespace -> foreach."""
    stages: dict[str, Any] = {}
    by_pipeline: dict[str, list[StageSpec]] = {}
    for spec in specs:
        by_pipeline.setdefault(spec.pipeline, []).append(spec)
    for pipe, group in by_pipeline.items():
        if len(group) == 1 and group[0].namespace is None:
            stages[pipe] = group[0].to_dvc()
            continue
        templates = [_template(s.to_dvc(), s.namespace or "") for s in group]
        if len(group) > 1 and all(t == templates[0] for t in templates):
            stages[pipe] = {"foreach": [s.namespace for s in group], "do": templates[0]}
        else:  # e.g. text's ingest also writes a tokenizer: explicit stages
            for s in group:
                stages[f"{pipe}-{s.namespace}"] = s.to_dvc()
    return {"stages": stages}


def render(doc: Mapping[str, Any], env: str) -> str:
    """dvc.yaml text: a header comment and block-style YAML in a stable order."""
    env_flag = "" if env == "base" else f" --env {env}"
    body = yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False, width=100)
    return HEADER.format(env_flag=env_flag) + body


def build_specs(project: Path, config: SyncConfig) -> list[StageSpec]:
    """Every stage of the default run, derived from the Kedro project at ``project``."""
    builder = _Builder(project, config)
    try:
        specs = [builder.stage(name, ns, sub) for name, ns, sub in builder.slices()]
    finally:
        builder.close()
    owner: dict[str, str] = {}
    for spec in specs:
        for path in (*spec.outs, *spec.metrics, *spec.plots):
            if path in owner:
                raise DvcSyncError(
                    f"{path} ({spec.datasets.get(path)}) is written by both stage "
                    f"{owner[path]} and stage {spec.name}"
                )
            owner[path] = spec.name
    return specs


def generate(project: str | Path, config: SyncConfig | None = None) -> str:
    """The dvc.yaml text the Kedro project at ``project`` implies."""
    config = config or SyncConfig()
    project = Path(project).resolve()
    return render(assemble(build_specs(project, config)), config.env)


def write(project: str | Path, config: SyncConfig | None = None) -> Path:
    """Generate dvc.yaml and write it atomically into the project; returns its path."""
    config = config or SyncConfig()
    project = Path(project).resolve()
    return atomic_write(project / config.dvc_file, generate(project, config))


# --------------------------------------------------------------------------- drift check


def expand_stages(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Stages of a dvc.yaml document with list-``foreach`` groups expanded (``name@item``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, stage in (doc.get("stages") or {}).items():
        if isinstance(stage, dict) and "foreach" in stage:
            items = stage["foreach"]
            if not isinstance(items, list):
                raise DvcSyncError(f"stage {name}: only list foreach is supported by the check")
            for item in items:
                out[f"{name}@{item}"] = _expand(stage.get("do", {}), str(item))
        else:
            out[name] = stage or {}
    return out


def _entries(stage: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A deps/outs/metrics/plots/params list as {path: properties}."""
    result: dict[str, Any] = {}
    for entry in stage.get(key) or []:
        if isinstance(entry, dict):
            for path, props in entry.items():
                result[str(path)] = props
        else:
            result[str(entry)] = None
    return result


def _params(stage: Mapping[str, Any]) -> set[str]:
    keys: set[str] = set()
    for entry in stage.get("params") or []:
        if isinstance(entry, dict):
            for f, ks in entry.items():
                keys.update({f"{f}:{k}" for k in ks} if ks else {f"{f}:*"})
        else:
            keys.add(f"params.yaml:{entry}")
    return keys


def diff_stages(
    expected: Mapping[str, dict[str, Any]],
    actual: Mapping[str, dict[str, Any]],
    names: Mapping[str, str] | None = None,
) -> list[str]:
    """Human-readable differences between expected (generated) and actual stages."""
    names = names or {}
    problems: list[str] = []
    for stage in expected.keys() - actual.keys():
        problems.append(f"stage {stage}: produced by Kedro but missing from dvc.yaml")
    for stage in actual.keys() - expected.keys():
        problems.append(f"stage {stage}: in dvc.yaml but not a Kedro slice of the default run")
    for stage in sorted(expected.keys() & actual.keys()):
        exp, act = expected[stage], actual[stage]
        if exp.get("cmd") != act.get("cmd"):
            problems.append(
                f"stage {stage}: cmd is {act.get('cmd')!r}, expected {exp.get('cmd')!r}"
            )
        for key in ("deps", "outs", "metrics", "plots"):
            e, a = _entries(exp, key), _entries(act, key)
            for path in sorted(e.keys() - a.keys()):
                what = f" (Kedro dataset {names[path]})" if path in names else ""
                problems.append(f"stage {stage}: {key}: missing {path}{what}")
            for path in sorted(a.keys() - e.keys()):
                problems.append(f"stage {stage}: {key}: unexpected {path}")
            for path in sorted(e.keys() & a.keys()):
                if (e[path] or None) != (a[path] or None):
                    problems.append(
                        f"stage {stage}: {key}: {path} has {a[path]!r}, expected {e[path]!r}"
                    )
        e, a = _params(exp), _params(act)
        problems += [f"stage {stage}: params: missing {k}" for k in sorted(e - a)]
        problems += [f"stage {stage}: params: unexpected {k}" for k in sorted(a - e)]
    return sorted(problems)


def _git_ignored(project: Path, paths: Sequence[str]) -> list[str]:
    """Those of ``paths`` that git would ignore (empty when git is unavailable)."""
    if not paths or not (project / ".git").exists():
        return []
    try:
        proc = subprocess.run(
            ["git", "check-ignore", "--no-index", "--stdin"],
            cwd=project,
            input="\n".join(paths),
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in proc.stdout.splitlines() if line]


def check(project: str | Path, config: SyncConfig | None = None) -> list[str]:
    """Differences between dvc.yaml on disk and what the Kedro project implies; [] if none.

    Also flags ``cache: false`` metrics/plots that git ignores: they would never be
    committed, and ``dvc metrics diff`` / ``dvc plots diff`` could not read older revisions.
    """
    config = config or SyncConfig()
    project = Path(project).resolve()
    target = project / config.dvc_file
    if not target.is_file():
        raise FileNotFoundError(f"{target} does not exist: generate it first")
    specs = build_specs(project, config)
    doc = assemble(specs)
    text = render(doc, config.env)
    current = target.read_text(encoding="utf-8")
    problems: list[str] = []
    if current != text:
        try:
            actual_doc = yaml.safe_load(current) or {}
        except yaml.YAMLError as exc:
            return [f"{target}: not valid YAML ({exc})"]
        names = {p: n for s in specs for p, n in s.datasets.items()}
        problems = diff_stages(expand_stages(doc), expand_stages(actual_doc), names)
        if not problems:
            problems = [f"{config.dvc_file}: same stages, but not the generator's text (format)"]
    uncached = sorted(p for s in specs for p in (*s.metrics, *s.plots))
    problems += [
        f"{p}: a cache: false metric/plot that git ignores (add a `!{p}` line to .gitignore)"
        for p in _git_ignored(project, uncached)
    ]
    return problems


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write dvc.yaml, or with ``--check`` report drift and exit 1."""
    parser = argparse.ArgumentParser(
        prog="python -m d2v_pipeline.dvc_sync", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--env", default="base", help="Kedro environment (default: base)")
    parser.add_argument("--project", default=".", help="project folder (default: .)")
    parser.add_argument("--output", default="dvc.yaml", help="file to write/check")
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("kedro", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="One or more dataset names contain")
    config = SyncConfig(env=args.env, dvc_file=args.output, quiet=True)
    project = Path(args.project).resolve()
    env_flag = "" if args.env == "base" else f" --env {args.env}"
    try:
        if args.check:
            problems = check(project, config)
            if problems:
                print(f"{args.output} is stale ({len(problems)} differences):", file=sys.stderr)
                for line in problems:
                    print(f"  - {line}", file=sys.stderr)
                print(f"regenerate: python -m d2v_pipeline.dvc_sync{env_flag}", file=sys.stderr)
                return 1
            print(f"{args.output} matches the Kedro pipelines and catalog (env {args.env})")
            return 0
        path = write(project, config)
        print(f"wrote {path}")
        return 0
    except (DvcSyncError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
