"""Plain text for the terminal: tables with column widths fitted to the cells, and a long text on one line."""

from __future__ import annotations


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return lines


def figure(value: float | None, threshold: float | None = None, digits: int = 3, kind: str = "f") -> str:
    """``value`` to ``digits`` decimals (``kind`` "g": significant digits), or to as many more (up to 9) as tell it
    from ``threshold`` where it is not the threshold but would print as it: "0.100 (22/219) exceeds max 0.1" reads
    as a wrong verdict, "0.1005" does not."""
    if value is None:  # a NaN as report metadata records it (strict JSON has no NaN)
        value = float("nan")
    text = f"{value:.{digits}{kind}}"
    if threshold is None or value != value or value == threshold:  # NaN, or the threshold itself: as it is
        return text
    while digits < 9 and text == f"{threshold:.{digits}{kind}}":
        digits += 1
        text = f"{value:.{digits}{kind}}"
    return text


def one_line(text, width: int) -> str:
    """``text`` (None: empty) with its whitespace runs made single spaces, cut to ``width`` characters with
    "..." at the end when longer: a prompt or reply quoted in a one-line message."""
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."
