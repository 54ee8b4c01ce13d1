#!/usr/bin/env python
"""Learning curves from fairseq-train logs: validation BLEU against CPU-minutes, one line per system (CSV and PNG).

    python scripts/learning_curve.py ar=work/bench/ckpt/transformer/train.log ctc=work/bench/ckpt/ctc/train.log \\
        --threads 1 --csv curve.csv --png curve.png

Each SYSTEM argument is LABEL=LOGFILE (or just LOGFILE, labelled by its folder's name): the output of fairseq-train with
``--log-format simple`` and ``--eval-bleu`` (fairseq's ``translation`` task, or the plugin's ``translation_lev_ctc``
and ``translation_lev_bleu``). Its points are the ``valid on 'SUBSET' subset`` lines with a finite ``bleu``
(validations that did not decode log ``bleu -inf`` and are skipped), at their ``num_updates``. Their time is the
line's own ``wall`` (seconds since training began, counting earlier runs of a resumed checkpoint; the plugin's tasks
log it), else the ``wall`` of the training lines around it (``train_inner``/``train``: fairseq's ``translation``
task does not log it on validation lines), interpolated by update count. CPU-minutes = wall seconds x threads / 60,
with each system's threads from ``--threads`` (default 1: one job per core). A log appended by resumed runs
(``tee -a``) keeps the last validation at each update count.

CSV columns: system, num_updates, wall_s, threads, cpu_minutes, bleu.
"""
import argparse
import csv
import math
import os
import re
import sys

_VALID = re.compile(r"\|\s*valid on '(?P<subset>[^']+)' subset\s*\|(?P<stats>.*)$")
_TRAIN_INNER = re.compile(r"\|\s*train_inner\s*\|(?P<stats>.*)$")
_TRAIN = re.compile(r"\|\s*train\s*\|\s*epoch\s+\d+\s*\|(?P<stats>.*)$")


def _pipe_stats(text):
    """'loss 0.9 | bleu 48.09 | num_updates 100' -> {'loss': '0.9', ...}"""
    out = {}
    for part in text.split("|"):
        bits = part.strip().split(None, 1)
        if len(bits) == 2:
            out[bits[0]] = bits[1].strip()
    return out


def _inner_stats(text):
    """'epoch 003:  2 / 24 loss=6.3, num_updates=50, wall=28' -> {'loss': '6.3', ...}"""
    return dict(m.groups() for m in re.finditer(r"([A-Za-z_][\w]*)=([^,\s]+)", text))


def parse_log(path, subset="valid"):
    """The validation points of one fairseq-train log: a list of dicts ``num_updates``, ``bleu`` (float; -inf where
    the validation did not decode) and ``wall_s`` (float), sorted by update count, the last occurrence of each count.

    Raises ValueError naming the file when it has no validation line with a bleu, or when a validation's time cannot be
    found."""
    events = []  # ("train", num_updates, wall) / ("valid", num_updates, bleu, wall or None)
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            m = _VALID.search(line)
            if m:
                if m.group("subset") != subset:
                    continue
                stats = _pipe_stats(m.group("stats"))
                if "bleu" not in stats or "num_updates" not in stats:
                    continue
                try:
                    bleu = float(stats["bleu"])
                    nu = int(float(stats["num_updates"]))
                    wall = float(stats["wall"]) if "wall" in stats else None
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: cannot read bleu/num_updates/wall from: {line}") from None
                events.append(("valid", nu, bleu, wall, lineno))
                continue
            m = _TRAIN_INNER.search(line)
            stats = _inner_stats(m.group("stats")) if m else None
            if stats is None:
                m = _TRAIN.search(line)
                stats = _pipe_stats(m.group("stats")) if m else None
            if stats and "num_updates" in stats and "wall" in stats:
                try:
                    events.append(("train", int(float(stats["num_updates"])), float(stats["wall"])))
                except ValueError:
                    pass
    points = {}
    for i, ev in enumerate(events):
        if ev[0] != "valid":
            continue
        _, nu, bleu, wall, lineno = ev
        if wall is None:
            wall = _wall_from_training_lines(events, i, nu)
            if wall is None:
                raise ValueError(
                    f"{path}:{lineno}: the validation at {nu} updates has no wall time, and no training line "
                    "(train_inner/train with wall) surrounds it; train with --log-format simple and a --log-interval "
                    "that prints training lines"
                )
        points[nu] = {"num_updates": nu, "bleu": bleu, "wall_s": wall}
    if not points:
        raise ValueError(
            f"{path}: no \"valid on '{subset}' subset\" line with a bleu value; train with --eval-bleu and "
            "--log-format simple (or pick the subset with --subset)"
        )
    return [points[k] for k in sorted(points)]


def _wall_from_training_lines(events, i, nu):
    """Wall time at update ``nu`` from the training lines before and after event ``i`` (linear in updates)."""
    before = next((e for e in reversed(events[:i]) if e[0] == "train" and e[1] <= nu), None)
    after = next((e for e in events[i + 1:] if e[0] == "train" and e[1] >= nu), None)
    if before is not None and (before[1] == nu or after is None):
        return before[2]
    if after is None:
        return None
    if before is None or after[1] == nu:
        return after[2]
    return before[2] + (after[2] - before[2]) * (nu - before[1]) / (after[1] - before[1])


def parse_systems(specs):
    """['ar=a.log', 'b/train.log'] -> [('ar', 'a.log'), ('b', 'b/train.log')]; labels must be unique."""
    systems = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep:
            path = spec
            label = os.path.basename(os.path.dirname(os.path.abspath(spec))) or spec
        if not label or not path:
            raise ValueError(f"system {spec!r}: expected LABEL=LOGFILE")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"system {label!r}: log file {path!r} does not exist")
        if label in dict(systems):
            raise ValueError(f"system label {label!r} given twice; name each LABEL=LOGFILE differently")
        systems.append((label, path))
    return systems


def parse_threads(specs, labels):
    """--threads values ('2' for every system, 'LABEL=2' for one) -> {label: threads}; default 1."""
    threads = {label: 1 for label in labels}
    for spec in specs or []:
        label, sep, value = spec.rpartition("=")
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"--threads {spec!r}: expected N or LABEL=N with an integer N") from None
        if n < 1:
            raise ValueError(f"--threads {spec!r}: the number of threads must be >= 1")
        if not sep:
            threads = {k: n for k in threads}
        elif label not in threads:
            raise ValueError(f"--threads {spec!r}: no system is labelled {label!r} (systems: {', '.join(labels)})")
        else:
            threads[label] = n
    return threads


def curve_rows(systems, threads, subset="valid"):
    """CSV rows (dicts) of every decoded validation of every system, in system then update order."""
    rows = []
    for label, path in systems:
        for p in parse_log(path, subset):
            if not math.isfinite(p["bleu"]):
                continue  # a validation that did not decode (--eval-bleu-interval-updates)
            rows.append({
                "system": label, "num_updates": p["num_updates"], "wall_s": round(p["wall_s"], 1),
                "threads": threads[label], "cpu_minutes": round(p["wall_s"] * threads[label] / 60.0, 3),
                "bleu": p["bleu"],
            })
    return rows


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["system", "num_updates", "wall_s", "threads", "cpu_minutes", "bleu"])
        writer.writeheader()
        writer.writerows(rows)


X_AXES = {"cpu_minutes": "CPU-minutes (wall time x threads)",
          "num_updates": "updates (equal compute per update for same-shaped systems on the same batches)"}


def plot(rows, labels, path, title=None, x="cpu_minutes", ylabel="validation BLEU"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in labels:
        pts = [r for r in rows if r["system"] == label]
        if pts:
            ax.plot([r[x] for r in pts], [r["bleu"] for r in pts], marker="o", markersize=3, label=label)
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Validation BLEU during training")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("systems", nargs="+", metavar="LABEL=LOGFILE",
                   help="a system's fairseq-train log (--log-format simple, --eval-bleu) and its label in the plot")
    p.add_argument("--threads", action="append", metavar="N|LABEL=N",
                   help="threads each training job used, to turn wall time into CPU time: N for every system, "
                        "LABEL=N for one (repeat the flag); default 1")
    p.add_argument("--subset", default="valid", help="validation subset whose BLEU is plotted (default: valid)")
    p.add_argument("--csv", metavar="FILE", help="write the points here")
    p.add_argument("--png", metavar="FILE", help="write the plot here")
    p.add_argument("--title", help="plot title")
    p.add_argument("--x", default="cpu_minutes", choices=sorted(X_AXES),
                   help="the plot's x axis: cpu_minutes (default) or num_updates, for jobs that shared cores (their "
                        "wall time overstates their CPU time) when the systems cost the same per update")
    p.add_argument("--ylabel", default="validation BLEU", help="the plot's y-axis label")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.csv and not args.png:
        print("error: nothing to write: pass --csv FILE and/or --png FILE", file=sys.stderr)
        return 2
    try:
        systems = parse_systems(args.systems)
        labels = [label for label, _ in systems]
        threads = parse_threads(args.threads, labels)
        rows = curve_rows(systems, threads, args.subset)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for label in labels:
        pts = [r for r in rows if r["system"] == label]
        if not pts:
            print(f"warning: {label}: no validation decoded (every bleu is -inf)", file=sys.stderr)
            continue
        best = max(pts, key=lambda r: r["bleu"])
        print(f"{label}: {len(pts)} points, last {pts[-1]['bleu']:.2f} BLEU at {pts[-1]['cpu_minutes']:.1f} "
              f"CPU-min ({pts[-1]['num_updates']} updates), best {best['bleu']:.2f} at {best['cpu_minutes']:.1f}")
    if args.csv:
        write_csv(rows, args.csv)
    if args.png:
        plot(rows, labels, args.png, args.title, args.x, args.ylabel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
