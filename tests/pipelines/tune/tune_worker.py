"""One tuning worker process for the multi-worker tests (not a test module).

Usage: python tune_worker.py <inputs folder> <study folder> <record json> [<go file name>]

After loading its inputs the worker writes ``<record json>.ready`` and waits for the go file
(default ``go``) in the inputs folder, so the test can start several workers' studies at the
same moment. The study's storage is the one in the inputs' tune block (journal file in the
study folder, or a database URL).
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
    go = inputs_dir / (sys.argv[4] if len(sys.argv) > 4 else "go")
    model_input = load_file(str(inputs_dir / "arrays.safetensors"))
    inputs = json.loads((inputs_dir / "inputs.json").read_text())
    out.with_suffix(".ready").touch()
    deadline = time.monotonic() + 300
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.05)
    record = run_tuning_study(
        model_input,
        inputs["label_subsets"],
        inputs["dataset_info"],
        inputs["pretrain"],
        inputs["tune"],
        inputs["runtime"],
        study_dir,
    )
    out.write_text(json.dumps(record))


if __name__ == "__main__":
    main()
