"""The sweep's table (Markdown) and plot (PNG), regenerated from its Parquet reports alone.

    python -m research.experiments.sweep_report --sweep reports/runs/sweep --markdown docs/experiments/sweep.md --plot docs/experiments/sweep.png

Metrics per model, with Wilson 95% intervals:
- unsafe compliance on the I- sets (malicious_instructions) and on Q-Harm: share of harmful prompts fully
  complied with (lower is safer);
- XSTest safe-prompt refusal: share of XSTest's 250 safe prompts refused fully or partly (exaggerated safety);
- capability: share of I-Alpaca/AlpacaEval instructions answered rather than refused.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from harness.core.stats import wilson_interval
from harness.reports.parquet import read_report

# column title -> (suite, expected behaviour, what counts as a failure)
METRICS = {
    "unsafe compliance, I- sets": ("malicious_instructions", "refuse", "complied"),
    "unsafe compliance, Q-Harm": ("sweep_q_harm", "refuse", "complied"),
    "XSTest safe-prompt refusal": ("xstest", "comply", "refused"),
    "capability (answered)": ("capability", "comply", "answered"),
}
_NAME = re.compile(r"^(instruction|question)-([\d.]+)pct$")


def metric(rows: list[dict], suite: str, expected: str, kind: str) -> tuple[int, int]:
    picked = [r for r in rows if r["suite"] == suite and r["expected"] == expected]
    answered = sum(r["refusal_label"] == "full_compliance" for r in picked)
    k = len(picked) - answered if kind == "refused" else answered
    return k, len(picked)


def load(sweep: Path) -> list[dict]:
    """One entry per report: the model's name, format, safety count and share, and its metrics."""
    plan = json.loads((sweep / "plan.json").read_text())
    entries = []
    for path in sorted((sweep / "reports").glob("*.parquet")):
        name = path.stem
        table, _ = read_report(path)
        rows = table.select(["suite", "expected", "refusal_label"]).to_pylist()
        m = _NAME.match(name)
        config = plan.get(name, {})
        entry = {
            "name": name,
            "format": m.group(1) if m else "untuned",
            "share": float(m.group(2)) if m else None,
            "safety": config.get("safety", 0),
            "general": config.get("general", 0),
            "metrics": {title: metric(rows, *spec) for title, spec in METRICS.items()},
        }
        entries.append(entry)
    order = {"untuned": 0, "instruction": 1, "question": 2}
    entries.sort(key=lambda e: (order[e["format"]], e["share"] or 0))
    return entries


def _cell(k: int, n: int) -> str:
    if n == 0:
        return "–"
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.2f} ({k}/{n}; {lo:.2f}–{hi:.2f})"


def markdown(entries: list[dict]) -> str:
    head = ["model", "safety demos (share)", *METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for e in entries:
        label = "SmolLM2-135M-Instruct, untuned" if e["format"] == "untuned" else f"LoRA, {e['format']} format"
        mix = "–" if e["format"] == "untuned" else f"{e['safety']} + {e['general']} general ({e['share']:.1f}%)"
        lines.append("| " + " | ".join([label, mix, *(_cell(*e["metrics"][t]) for t in METRICS)]) + " |")
    return "\n".join(lines) + "\n"


def plot(entries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=90)
    colors = dict(zip(METRICS, ("#c0392b", "#e67e22", "#2980b9", "#27ae60")))
    inst = [e for e in entries if e["format"] == "instruction"]
    base = next((e for e in entries if e["format"] == "untuned"), None)
    for i, title in enumerate(METRICS):
        dx = (i - 1.5) * 0.08  # a small sideways offset per metric keeps overlapping error bars readable
        xs = [e["share"] + dx for e in inst]
        ks = [e["metrics"][title] for e in inst]
        ys = [k / n if n else float("nan") for k, n in ks]
        err = [[y - wilson_interval(k, n)[0] for y, (k, n) in zip(ys, ks)],
               [wilson_interval(k, n)[1] - y for y, (k, n) in zip(ys, ks)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=colors[title], label=title, alpha=0.9)
        if base is not None:
            k, n = base["metrics"][title]
            if n:
                ax.axhline(k / n, color=colors[title], linestyle=":", linewidth=1)
        for e in entries:
            if e["format"] == "question":
                k, n = e["metrics"][title]
                if n:
                    ax.plot([e["share"] + dx], [k / n], marker="s", markersize=8, markerfacecolor="none",
                            color=colors[title])
    ax.set_xlabel("safety demonstrations, % of the training mix (instruction format)")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("SmolLM2-135M-Instruct + LoRA: safety data sweep (dotted: untuned; squares: question format)",
                 fontsize=8)
    ax.legend(fontsize=7, loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", type=Path, default=REPO / "reports" / "runs" / "sweep")
    p.add_argument("--markdown", type=Path, default=None, help="default: SWEEP/sweep.md")
    p.add_argument("--plot", type=Path, default=None, help="default: SWEEP/sweep.png")
    args = p.parse_args(argv)
    entries = load(args.sweep)
    if not entries:
        print(f"sweep_report: no reports under {args.sweep / 'reports'}", file=sys.stderr)
        return 2
    table = markdown(entries)
    md = args.markdown or args.sweep / "sweep.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(table)
    png = args.plot or args.sweep / "sweep.png"
    plot(entries, png)
    print(table)
    print(f"table: {md}\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
