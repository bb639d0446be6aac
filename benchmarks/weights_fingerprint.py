"""Fingerprint every encoder under a data root by its tensors alone, to prove that a change
left the weights bitwise identical.

The file bytes of ``encoder.safetensors`` also hold header metadata (which may gain fields),
so this hashes what training computed: each tensor's name, dtype, shape and raw bytes, in
key order. Use it before and after a refactor on the same run:

    python benchmarks/weights_fingerprint.py data/smoke > before.json   # old code's run
    python benchmarks/weights_fingerprint.py data/smoke > after.json    # new code's run
    python benchmarks/weights_fingerprint.py --compare before.json after.json

``--compare`` exits 1 and names the files that differ (or exist on one side only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open


def tensor_fingerprint(path: Path) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in ``path``, sorted by name."""
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprints(root: Path) -> dict[str, str]:
    """{path relative to ``root``: fingerprint} for every ``*.safetensors`` under ``root``."""
    return {
        str(p.relative_to(root)): tensor_fingerprint(p)
        for p in sorted(root.rglob("*.safetensors"))
        if ".tmp" not in p.name
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="a data root, or two JSON files with --compare")
    ap.add_argument("--compare", action="store_true", help="compare two fingerprint files")
    args = ap.parse_args(argv)
    if not args.compare:
        json.dump(fingerprints(Path(args.paths[0])), sys.stdout, indent=1)
        print()
        return 0
    a, b = (json.loads(Path(p).read_text()) for p in args.paths[:2])
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    for k in differ:
        print(f"differs: {k}  {a.get(k, '(missing)')[:12]} vs {b.get(k, '(missing)')[:12]}")
    print(
        f"{len(a.keys() & b.keys()) - len(set(differ) & a.keys() & b.keys())} identical, "
        f"{len(differ)} different or one-sided"
    )
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
