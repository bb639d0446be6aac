"""One tuning worker process for the two-worker test (not a test module).

Usage: python tune_worker.py <inputs folder> <study folder> <record json>

After loading its inputs the worker writes ``<record json>.ready`` and waits for ``go`` in the
inputs folder, so the test can start both workers' studies at the same moment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from d2v_pipeline.pipelines.tune.nodes import run_tuning_study


def main() -> None:
    inputs_dir, study_dir, out = (Path(a) for a in sys.argv[1:4])
    model_input = load_file(str(inputs_dir / "arrays.safetensors"))
    inputs = json.loads((inputs_dir / "inputs.json").read_text())
    out.with_suffix(".ready").touch()
    deadline = time.monotonic() + 300
    while not (inputs_dir / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.05)
    record = run_tuning_study(
        model_input,
        inputs["label_subsets"],
        inputs["dataset_info"],
        inputs["pretrain"],
        inputs["tune"],
        study_dir,
    )
    out.write_text(json.dumps(record))


if __name__ == "__main__":
    main()
