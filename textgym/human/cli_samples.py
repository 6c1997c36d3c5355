"""``textgym samples import DB FILE.jsonl`` and ``textgym samples export DB FILE.jsonl``.

Import reads one JSON object per line with at least ``prompt`` and ``completion`` (optional: ``prompt_ids``,
``completion_ids``, ``tokens``, ``run_id``, ``model_id``, ``meta``, ``id`` and ``ratings`` as export writes
them); it is all or nothing, and a bad line is named. Export writes every sample with its ratings.
"""

from __future__ import annotations

import argparse
import sys

from textgym.human.store import RatingStore


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["import", "export"], help="import samples from, or export them to, JSONL")
    parser.add_argument("db", help="rating store file (created if missing)")
    parser.add_argument("file", help="JSONL file: one sample per line")
    parser.add_argument("--run-id", default=None, help="run id recorded on imported samples that have none")


def main(args: argparse.Namespace) -> int:
    try:
        store = RatingStore(args.db)
        if args.action == "import":
            n, m = store.import_jsonl(args.file, run_id=args.run_id)
            print(f"imported {n} samples and {m} ratings into {args.db}")
        else:
            n = store.export_jsonl(args.file)
            print(f"exported {n} samples to {args.file}")
    except (ValueError, OSError) as e:
        print(f"textgym samples {args.action}: {e}", file=sys.stderr)
        return 2
    return 0
