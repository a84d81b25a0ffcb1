"""``genplug plugins``: what is installed, what it provides, and what failed to load."""

from __future__ import annotations

import json


def register(sub) -> None:
    parser = sub.add_parser("plugins", help="list installed plugins and what they provide")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args) -> int:
    from genplug.plugin_manager import get_plugin_manager

    infos = get_plugin_manager().plugin_list()
    if args.json:
        print(json.dumps([
            {"name": i.name, "distribution": i.distribution, "version": i.version, "entry_point": i.entry_point,
             "status": i.status, "builtin": i.builtin, "error": i.error, "provides": i.provides, "hooks": i.hooks}
            for i in infos
        ], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="genplug plugins")
    for column in ("plugin", "distribution", "status", "provides"):
        table.add_column(column)
    colours = {"loaded": "green", "blocked": "yellow", "broken": "red", "not autoloaded": "yellow"}
    for info in infos:
        provides = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(names)}" for kind, names in info.provides.items())
        status = f"[{colours.get(info.status, 'white')}]{info.status}[/]"
        if info.error:
            status += f"\n{info.error}"
        table.add_row(info.name, f"{info.distribution} {info.version}", status, provides or "-")
    Console().print(table)
    return 0
