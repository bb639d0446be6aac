"""``python -m d2v_pipeline.schema --write | --check``: regenerate or verify docs/parameters.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from d2v_pipeline.schema import docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m d2v_pipeline.schema", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the parameter reference")
    action.add_argument("--check", action="store_true", help="exit 1 when it is stale")
    parser.add_argument("--path", type=Path, default=docs.DOCS_PATH, help="the Markdown file")
    args = parser.parse_args(argv)
    if args.write:
        docs.write(args.path)
        print(f"wrote {args.path}")
        return 0
    if docs.is_current(args.path):
        print(f"{args.path} is up to date")
        return 0
    print(f"{args.path} is stale: run `python -m d2v_pipeline.schema --write`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
