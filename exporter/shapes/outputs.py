"""What the shapes-tiny measurement scripts (report, edit_diagnostics) share: their output options, the
command line they record, and writing the markdown again from the JSON alone (--render-only)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def add_output_args(ap: argparse.ArgumentParser, what: str) -> None:
    ap.add_argument("--out", required=True, type=Path, help=f"{what} to write")
    ap.add_argument("--json", type=Path, help="also write the numbers, per scene, as JSON")
    ap.add_argument("--render-only", action="store_true",
                    help="measure nothing: write --out again from the numbers in --json (after a text change)")


def saved_summary(ap: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The numbers of an earlier run, for --render-only."""
    if args.json is None:
        ap.error("--render-only reads the numbers from --json")
    return json.loads(args.json.read_text())


def command_line(module: str, argv: list[str] | None) -> str:
    return f"python -m {module} " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))


def make_parents(args: argparse.Namespace) -> None:
    for path in (args.out, args.json):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)


def write(args: argparse.Namespace, text: str, summary: dict) -> None:
    args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=float) + "\n")
