#!/usr/bin/env python
"""Replace a results section of README.md (between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, NAME =
``--section``, default ``bench``) with a benchmark report (``report.md`` of scripts/benchmark.py) and copy its plot
next to the README.

    python scripts/update_readme_results.py --readme README.md --report work/bench/report/report.md \\
        --plot work/bench/report/plot.png --plot-dest docs/bench.png --note "how it was made"
    python scripts/update_readme_results.py --readme README.md --report work/bnb-m30k/report/report.md \\
        --section bnb-table --drop-sections "NAR / AR ratios" "Batch-1 profile" --note "..."
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
    p.add_argument("--readme", required=True, help="README.md to update in place")
    p.add_argument("--report", required=True, help="report.md written by scripts/benchmark.py")
    p.add_argument("--plot", help="plot.png written by scripts/benchmark.py")
    p.add_argument("--plot-dest", help="where to copy the plot (linked from the README)")
    p.add_argument("--note", default="", help="one line saying how the numbers were made")
    p.add_argument("--section", default="bench",
                   help="README section to replace: the text between <!-- SECTION:begin --> and <!-- SECTION:end --> "
                        "(default bench)")
    p.add_argument("--drop-sections", nargs="*", default=[], metavar="TITLE",
                   help="leave out these '## TITLE' sections of the report (e.g. 'NAR / AR ratios')")
    args = p.parse_args(argv)
    for path in (args.readme, args.report):
        if not os.path.isfile(path):
            sys.exit(f"ERROR: file not found: {path}")
    body = drop_sections(open(args.report, encoding="utf-8").read(), set(args.drop_sections))
    if args.note:
        body = f"_{args.note}_\n\n{body}"
    if args.plot and args.plot_dest and os.path.isfile(args.plot):
        os.makedirs(os.path.dirname(os.path.abspath(args.plot_dest)), exist_ok=True)
        shutil.copy(args.plot, args.plot_dest)
        rel = os.path.relpath(args.plot_dest, os.path.dirname(os.path.abspath(args.readme)))
        body += f"\n\n![quality against batch-1 latency]({rel})\n"
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
