"""d2v_pipeline: data2vec experiments for images, speech and text as a Kedro project."""

__version__ = "0.1.0"
