#!/usr/bin/env python
"""Replace a results section of README.md (between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, NAME =
``--section``, default ``bench``) with a benchmark report (``report.md`` of scripts/benchmark.py) and copy its plot
next to the README.

    python scripts/update_readme_results.py --readme README.md --report work/bench/report/report.md \\
        --plot work/bench/report/plot.png --plot-dest docs/bench.png --note "how it was made"
    python scripts/update_readme_results.py --readme README.md --report work/bnb-m30k/report/report.md \\
        --section bnb-table --drop-sections "NAR / AR ratios" "Batch-1 profile" --note "..."
    # a short table for a front page (the full report kept elsewhere, e.g. docs/benchmark.md):
    python scripts/update_readme_results.py --readme README.md --report work/bench/report/report.md \\
        --table-only --columns system "speed-up vs AR" "x AR @batch 64" sacreBLEU \\
        --footer "Full report: [docs/benchmark.md](docs/benchmark.md)"

The file given as --readme can be any markdown file with the markers (docs/benchmark.md holds the full reports).
"""
import argparse
import os
import shutil
import sys

def markers(section: str = "bench"):
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"


def drop_sections(report: str, titles) -> str:
    """``report`` without its ``## TITLE`` sections (each up to the next ``## `` heading) for every title given."""
    out, skipping = [], False
    for line in report.splitlines(keepends=True):
        if line.startswith("## "):
            skipping = line[3:].strip() in titles
        if not skipping:
            out.append(line)
    return "".join(out)


def results_table(report: str) -> str:
    """The first markdown table of ``report`` (its consecutive lines starting with ``|``): the results table of
    scripts/benchmark.py, without the run description and the ``## `` sections."""
    lines = report.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        raise ValueError("the report has no markdown table")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def _cells(line: str):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def qualified_headers(headers):
    """Headers made unique: a header that occurs more than once (the benchmark's ``x AR`` after each throughput
    column) gets the ``@...`` part of the header before it, e.g. ``x AR @batch 64``."""
    out = []
    for i, h in enumerate(headers):
        if headers.count(h) > 1 and i > 0 and "@" in headers[i - 1]:
            h = f"{h} {headers[i - 1][headers[i - 1].index('@'):]}"
        out.append(h)
    return out


def select_columns(table: str, columns) -> str:
    """``table`` (a markdown table) with only ``columns`` (header texts as :func:`qualified_headers` names them), in
    that order; raises naming a column the table does not have."""
    lines = table.splitlines()
    headers = qualified_headers(_cells(lines[0]))
    missing = [c for c in columns if c not in headers]
    if missing:
        raise ValueError(f"the report's table has no column {missing}; its columns: {headers}")
    keep = [headers.index(c) for c in columns]
    rows = [_cells(line) for line in lines[2:]]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(row[i] if i < len(row) else "" for i in keep) + " |" for row in rows]
    return "\n".join(out)


def replace_section(readme_text: str, body: str, section: str = "bench") -> str:
    """The README with everything between the markers replaced by ``body``; raises if the markers are missing."""
    BEGIN, END = markers(section)
    if BEGIN not in readme_text or END not in readme_text or readme_text.index(BEGIN) > readme_text.index(END):
        raise ValueError(f"the README has no {BEGIN} ... {END} section")
    head, rest = readme_text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body.strip()}\n{END}{tail}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", required=True, help="markdown file to update in place (README.md, docs/benchmark.md, ...)")
    p.add_argument("--report", required=True, help="report.md written by scripts/benchmark.py")
    p.add_argument("--plot", help="plot.png written by scripts/benchmark.py")
    p.add_argument("--plot-dest", help="where to copy the plot (linked from the README)")
    p.add_argument("--note", default="", help="one line saying how the numbers were made")
    p.add_argument("--section", default="bench",
                   help="README section to replace: the text between <!-- SECTION:begin --> and <!-- SECTION:end --> "
                        "(default bench)")
    p.add_argument("--drop-sections", nargs="*", default=[], metavar="TITLE",
                   help="leave out these '## TITLE' sections of the report (e.g. 'NAR / AR ratios')")
    p.add_argument("--table-only", action="store_true",
                   help="write only the report's results table (no run description, no '## ' sections): for a "
                        "front page whose full report lives elsewhere")
    p.add_argument("--columns", nargs="+", metavar="HEADER",
                   help="with --table-only: keep these columns, in this order, named by their header text; a "
                        "repeated header takes the '@...' of the column before it ('x AR @batch 64', 'x AR "
                        "@max-tokens 4096')")
    p.add_argument("--footer", default="", help="a line written after the table (and plot), e.g. a link to the full "
                                                 "report")
    args = p.parse_args(argv)
    if args.columns and not args.table_only:
        p.error("--columns needs --table-only")
    for path in (args.readme, args.report):
        if not os.path.isfile(path):
            sys.exit(f"ERROR: file not found: {path}")
    report = open(args.report, encoding="utf-8").read()
    try:
        if args.table_only:
            body = results_table(report)
            if args.columns:
                body = select_columns(body, args.columns)
        else:
            body = drop_sections(report, set(args.drop_sections))
    except ValueError as e:
        sys.exit(f"ERROR: {args.report}: {e}")
    if args.note:
        body = f"_{args.note}_\n\n{body}"
    if args.plot and args.plot_dest and os.path.isfile(args.plot):
        os.makedirs(os.path.dirname(os.path.abspath(args.plot_dest)), exist_ok=True)
        shutil.copy(args.plot, args.plot_dest)
        rel = os.path.relpath(args.plot_dest, os.path.dirname(os.path.abspath(args.readme)))
        body += f"\n\n![quality against batch-1 latency]({rel})\n"
    if args.footer:
        body = f"{body.rstrip()}\n\n{args.footer}\n"
    text = open(args.readme, encoding="utf-8").read()
    try:
        text = replace_section(text, body, args.section)
    except ValueError as e:
        sys.exit(f"ERROR: {args.readme}: {e}")
    with open(args.readme, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"| {args.readme}: section {args.section} replaced from {args.report}")


if __name__ == "__main__":
    main()
