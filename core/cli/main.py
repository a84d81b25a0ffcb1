"""The ``genplug`` command: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import List, Optional

# torch's CPU wheels do not depend on numpy, and importing torch without it warns on every run; genplug
# never needs numpy, so the command line keeps that noise out of the user's terminal.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

COMMANDS = ("generate", "plugins", "explain", "config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genplug", description="Plugin-based decoding for PyTorch language models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"genplug.cli.{name}_command")
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
