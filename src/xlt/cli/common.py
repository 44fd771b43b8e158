"""What every command module shares: the console, ``-O KEY=VALUE`` parsing and registry listings."""

from __future__ import annotations

from rich.console import Console

from xlt.errors import XltError

out = Console()


def parse_options(items: list[str] | None, dictionary: str | None = None, flag: str = "-O") -> dict:
    """``["k=3", "flag=true", "path=x.bin"]`` -> ``{"k": 3, "flag": True, "path": "x.bin"}`` (JSON values where they parse)."""
    import json

    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise XltError(f"cannot read option {item!r} ({flag})", f"write it as KEY=VALUE, e.g. {flag} "
                           + ("wechsel_k=5" if flag == "-O" else "r=8"))
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    if dictionary:
        out["dictionary"] = dictionary
    return out


def print_registry(registry, flag: str) -> None:
    """Every entry of a registry with its description and its options (type, default, help), from the declarations."""
    from rich.markup import escape
    from rich.table import Table

    for entry in registry.describe():
        out.print(f"[bold]{escape(entry['name'])}[/]  {escape(entry['description'])}", highlight=False)
        if not entry["options"]:
            out.print("  [dim]no options[/]")
            continue
        table = Table(show_header=False, box=None, padding=(0, 1, 0, 2))
        for name, tp, default, help_ in entry["options"]:
            table.add_row(f"[cyan]{escape(name)}[/]", escape(tp), f"[dim]{escape(default)}[/]", escape(help_))
        out.print(table)
    out.print(f"[dim]Pass options as {flag}.[/]", highlight=False)
