"""``genplug config validate FILE``: check a generation_config.json and name every problem."""

from __future__ import annotations

import warnings


def register(sub) -> None:
    parser = sub.add_parser("config", help="work with generation config files")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    validate = actions.add_parser("validate", help="validate a generation_config.json file")
    validate.add_argument("file", help="path to a generation_config.json")
    validate.add_argument("--strict", action="store_true", help="treat warnings as problems")
    validate.set_defaults(run=run_validate)


def run_validate(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from genplug.config import GenerationConfig
    from genplug.errors import GenerationConfigError

    console = Console(soft_wrap=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = GenerationConfig.from_pretrained(args.file)
            config.validate(strict=args.strict)
        except (GenerationConfigError, OSError, ValueError) as exc:
            console.print(f"[red]invalid[/] {escape(args.file)}: {escape(str(exc))}", highlight=False)
            return 1
    problems = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for problem in problems:
        console.print(f"[yellow]warning[/] {escape(problem)}", highlight=False)
    if args.strict and problems:
        return 1
    console.print(f"[green]valid[/] {escape(args.file)}", highlight=False)
    return 0
