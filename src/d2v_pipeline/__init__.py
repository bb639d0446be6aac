"""d2v_pipeline: data2vec experiments for images, speech and text as a Kedro project."""

import os

# OpenMP threads that spin while waiting make torch 5-10x slower whenever another process
# competes for the cores (measured here: 7.8 s vs 0.7 s per image data2vec step with two
# threads on a busy 2-core machine). Passive waiting costs little on an idle machine.
# Set before torch loads its OpenMP runtime; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
