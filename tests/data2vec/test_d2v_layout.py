"""The library's layout (issue 18): one file per modality behind one interface, no import
cycle, no dispatch on encoder or config classes in the model files."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

import d2v_pipeline.data2vec as d2v
from d2v_pipeline.data2vec import ConfigError, build_pretrain_model
from d2v_pipeline.data2vec.encoder_base import Encoder
from d2v_pipeline.data2vec.modalities import MODALITIES, REGISTRY, get_modality
from d2v_pipeline.data2vec.modalities.base import Modality

PACKAGE = Path(d2v.__file__).parent
PKG_NAME = "d2v_pipeline.data2vec"
MODEL_FILES = ("models.py", "data2vec2.py", "model_base.py", "train.py")
MAX_MODALITY_LINES = 350


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PKG_NAME, *parts])


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (any level of the file, relative or absolute)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from . import x` imports the submodule x; `from .m import y` imports m
            submodules = [f"{base}.{a.name}" for a in node.names]
            targets = [m for m in submodules if m in modules] or [base]
        else:
            continue
        found |= {t for t in targets if t in modules}
    found.discard(name)
    return found


def _import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_import_graph_of_the_library_has_no_cycle() -> None:
    graph = _import_graph()
    assert f"{PKG_NAME}.modalities.image" in graph[f"{PKG_NAME}.modalities"]  # parsed at all
    assert f"{PKG_NAME}.config_base" in graph[f"{PKG_NAME}.modalities.speech"]
    assert f"{PKG_NAME}.modalities" in graph[f"{PKG_NAME}.model_base"]
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]


def _class_dispatch(path: Path) -> list[str]:
    """isinstance/issubclass calls on an encoder or config class, and comparisons of a
    ``.modality`` with a modality name, as "file:line source"."""
    tree = ast.parse(path.read_text(), str(path))
    hits = []
    for node in ast.walk(tree):
        bad = False
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
            "isinstance",
            "issubclass",
        ):
            names = {getattr(n, "id", getattr(n, "attr", "")) for n in ast.walk(node.args[1])}
            bad = any(n.endswith(("Encoder", "Config")) for n in names)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            attr = any(getattr(s, "attr", "") == "modality" for s in sides)
            bad = attr and any(getattr(s, "value", None) in MODALITIES for s in sides)
        if bad:
            hits.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return hits


def test_model_files_do_not_dispatch_on_encoder_classes(tmp_path: Path) -> None:
    hits = [h for f in ("models.py", "data2vec2.py", "model_base.py") for h in
            _class_dispatch(PACKAGE / f)]  # fmt: skip
    assert hits == []
    isinstance_hits = [h for h in _class_dispatch(PACKAGE / "train.py") if "isinstance" in h]
    assert isinstance_hits == []
    # the checker sees the dispatch this layout removed
    demo = tmp_path / "demo.py"
    demo.write_text("if isinstance(enc, ImageEncoder) or model.modality == 'text':\n    pass\n")
    assert len(_class_dispatch(demo)) == 2


def test_each_modality_file_reads_in_one_sitting() -> None:
    files = sorted((PACKAGE / "modalities").glob("*.py"))
    assert {f.stem for f in files} >= {"base", *MODALITIES}
    lengths = {f.name: len(f.read_text().splitlines()) for f in files}
    assert all(n < MAX_MODALITY_LINES for n in lengths.values()), lengths


def test_registry_holds_every_modality_and_rejects_unknown_ones() -> None:
    assert set(REGISTRY) == {"image", "speech", "text"} == set(MODALITIES)
    with pytest.raises(ConfigError, match=r"unknown modality 'video'.*image"):
        get_modality("video")


def _default_encoder_cfg(modality: Modality):
    """The modality's spec-default encoder config (text: ids from a tokenizer, required)."""
    required = {p.name for p in inspect.signature(modality.encoder_config).parameters.values()
                if p.default is inspect.Parameter.empty}  # fmt: skip
    ids = {"vocab_size": 40, "pad_id": 0, "mask_id": 1}
    return modality.encoder_config(**{k: ids[k] for k in required})


@pytest.mark.parametrize("name", ["image", "speech", "text"])
def test_each_registered_modality_implements_the_interface(name: str, batch) -> None:
    m = get_modality(name)
    assert isinstance(m, Modality) and m.name == name
    for cfg_cls in (m.encoder_config, m.mask_config, m.data2vec_config, m.mask2_config,
                    m.decoder_config, m.data2vec2_config, m.recon_config):  # fmt: skip
        assert cfg_cls.modality == name, cfg_cls.__name__
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = m.build_encoder(_default_encoder_cfg(m))
    assert isinstance(enc, Encoder) and enc.modality == name
    batch = batch(name, 3)
    if name == "image":  # the default ViT takes 28×28 one-channel images
        batch["x"] = torch.nn.functional.interpolate(batch["x"], size=(28, 28))
    elif name == "speech":  # 1 s at 16 kHz by default
        batch["x"] = batch["x"].repeat(1, 4)
    x = batch["x"]
    t = enc.num_tokens(m.input_len(x) if m.input_len(x) is not None else x.shape[-1])
    g = torch.Generator().manual_seed(0)

    v1 = m.v1_mask(enc, batch, m.mask_config(), g)
    assert v1.scored.shape == (3, t) and v1.scored.dtype == torch.bool and v1.scored.any()
    out = enc(v1.student_x, batch.get("attention_mask"), mask=v1.mask)
    assert out.tokens.shape == (3, t, enc.dim)

    v2 = m.v2_mask(enc, batch, m.mask2_config(), 2, g)
    assert v2.shape == (6, t) and v2.dtype == torch.bool and v2.any()

    head = m.recon_head(enc)
    pred = head(out.tokens[v1.scored])
    loss, stats = m.recon_loss(enc, pred, x, v1.scored, norm_target=True)
    assert torch.isfinite(loss) and stats
    assert m.teacher_copies("data2vec") is not None and "mask_emb" in m.teacher_drops()


def test_the_modality_rejects_another_modalitys_encoder_config(encoder_cfg) -> None:
    with pytest.raises(ValueError, match="text encoder config given to the image modality"):
        get_modality("image").build_encoder(encoder_cfg("text"))


@pytest.mark.parametrize("name", ["image", "speech", "text"])
def test_every_method_trains_a_step_through_the_registry(
    name: str, encoder_cfg, method_cfg, batch
) -> None:
    data = batch(name, 4)
    for method in ("data2vec", "data2vec2", "masked_recon"):
        top_k = {"top_k": 2} if method == "data2vec2" else {}  # <= the tiny depth
        mcfg = method_cfg(method, name, **top_k)
        model = build_pretrain_model(method, encoder_cfg(name), mcfg)
        assert model.modality_ops is get_modality(name)
        loss, _ = model.training_loss(data, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss), (name, method)
