"""`schema`: the sweep file's JSON Schema (for editors) or its Markdown reference (docs/config-reference.md)."""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("schema", help="print the sweep file's JSON Schema or its Markdown reference")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--json", action="store_true", help="the JSON Schema (for a YAML language server)")
    what.add_argument("--markdown", action="store_true", help="the reference, as docs/config-reference.md")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.config_docs import json_schema, markdown

    print(json.dumps(json_schema(), indent=2) if args.json else markdown(), end="" if args.markdown else "\n")
    return 0
