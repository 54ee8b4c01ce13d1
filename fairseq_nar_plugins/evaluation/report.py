"""Benchmark rows -> markdown table, CSV, and a PNG plot with the Pareto front (matplotlib, Agg backend)."""
import csv
import math
from typing import Dict, List, Optional, Sequence, Tuple

# (column key, header, format) for the markdown table; the CSV holds every key of a row
MARKDOWN_COLUMNS = [
    ("system", "system", "{}"),
    ("params_m", "params (M)", "{:.2f}"),
    ("output_length", "output length", "{}"),
    ("b1_ms", "batch-1 ms/sent (median [min-max])", None),
    ("b1_ratio", "latency / AR", "{:.2f}"),
    ("b1_speedup", "speed-up vs AR", "{:.2f}x"),
    ("bs_sps", "sent/s @batch", "{:.1f}"),
    ("bs_ratio", "x AR", "{:.2f}"),
    ("tok_sps", "sent/s @max-tokens", "{:.1f}"),
    ("tok_ratio", "x AR", "{:.2f}"),
    ("b1_gflop", "GFLOP/sent (b1)", "{:.3f}"),
    ("b1_gflops", "GFLOP/s b1 (% peak)", None),
    ("bs_gflops", "GFLOP/s @batch (% peak)", None),
    ("outside_matrix_pct", "b1 time outside matrix work (profiler)", "{:.0f}%"),
    ("quality", "quality", "{:.2f}"),
    ("chrf", "chrF", "{:.2f}"),
]


def _fmt(row: Dict, key: str, fmt: Optional[str]) -> str:
    if key == "b1_ms":
        if row.get("b1_ms") is None:
            return "-"
        return f"{row['b1_ms']:.1f} [{row['b1_ms_min']:.1f}-{row['b1_ms_max']:.1f}]"
    if key in ("b1_gflops", "bs_gflops"):
        value, pct = row.get(key), row.get(key + "_pct")
        return "-" if value is None else f"{value:.1f} ({pct:.1f}%)"
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def markdown_table(rows: Sequence[Dict], batch_label: str, tokens_label: str, quality_label: str,
                   extra_subsets: Sequence[str] = ()) -> str:
    """The results table; a quality column is shown when some row has it (``chrf`` only with scores), and each of
    ``extra_subsets`` adds "<quality_label> <subset>" and "chrF <subset>" columns (row keys ``quality_<subset>``,
    ``chrf_<subset>``)."""
    columns = [c for c in MARKDOWN_COLUMNS if c[0] != "chrf" or any(r.get("chrf") is not None for r in rows)]
    for sub in extra_subsets:
        columns += [(f"quality_{sub}", f"{quality_label} {sub}", "{:.2f}"), (f"chrf_{sub}", f"chrF {sub}", "{:.2f}")]
    headers = []
    for key, header, _ in columns:
        header = header.replace("@batch", f"@{batch_label}").replace("@max-tokens", f"@{tokens_label}")
        headers.append(quality_label if key == "quality" else header)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row, key, fmt) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def write_csv(path: str, rows: Sequence[Dict]) -> None:
    keys: List[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (" ".join(f"{x:.6g}" for x in v) if isinstance(v, (list, tuple)) else v)
                             for k, v in row.items()})


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], -math.inf
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def plot(path: str, labels: Sequence[str], xs: Sequence[float], ys: Sequence[float], xlabel: str, ylabel: str,
         title: str) -> List[int]:
    """Scatter of (x, y) with the Pareto front (lower x and higher y are better) drawn as a step line; returns the
    front's indices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    points = [(x, y) for x, y in zip(xs, ys)]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    for label, x, y in zip(labels, xs, ys):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    fx, fy = [xs[i] for i in front], [ys[i] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", linestyle="--", label="Pareto front", zorder=2)
    ax.scatter(fx, fy, facecolors="none", edgecolors="tab:red", s=120, zorder=4)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return front
