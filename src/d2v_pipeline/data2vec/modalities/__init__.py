"""The modality registry: one file per modality, one entry each.

Adding a modality = a new file here (configs, encoder, a :class:`Modality` subclass) and its
entry in ``_REGISTERED``. Everything that depends on the modality looks it up here by name
(``get_modality(cfg.modality)``); this is the one module that imports the modality files.
"""

from __future__ import annotations

from ..config_base import ConfigError
from .base import Modality
from .image import ImageModality
from .speech import SpeechModality
from .text import TextModality

_REGISTERED: tuple[Modality, ...] = (ImageModality(), SpeechModality(), TextModality())

REGISTRY: dict[str, Modality] = {m.name: m for m in _REGISTERED}
MODALITIES: tuple[str, ...] = tuple(REGISTRY)


def get_modality(name: str) -> Modality:
    """The registered modality called ``name``; ConfigError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown modality {name!r}; expected one of {MODALITIES}")
    return REGISTRY[name]


__all__ = ["MODALITIES", "REGISTRY", "Modality", "get_modality"]
