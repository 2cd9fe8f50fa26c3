"""Text output shared by the `hal` commands: byte sizes and tables (rich when installed, plain text otherwise)."""
from __future__ import annotations

__all__ = ["fmt_bytes", "print_table"]


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def print_table(title: str, columns: list[str], rows: list[list[str]], width: int = 120) -> None:
    """A table through rich when it is installed, plain aligned text otherwise; at least `width` wide, and wide
    enough that no cell is cut (a long model name must not truncate the device names beside it)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
        print(title)
        for line in [columns, ["-" * w for w in widths], *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
        return
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, no_wrap=True)
    for r in rows:
        table.add_row(*r)
    needed = sum(max([len(c), *(len(r[i]) for r in rows)]) + 3 for i, c in enumerate(columns)) + 1
    Console(width=max(width, needed, Console().width)).print(table)
