"""Plain text for the terminal: tables with column widths fitted to the cells, and a long text on one line."""

from __future__ import annotations


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return lines


def one_line(text, width: int) -> str:
    """``text`` (None: empty) with its whitespace runs made single spaces, cut to ``width`` characters with
    "..." at the end when longer: a prompt or reply quoted in a one-line message."""
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."
