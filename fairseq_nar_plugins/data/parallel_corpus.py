"""Checking and reading line-aligned parallel text before it is tokenized and binarized.

A parallel split is two files ``{prefix}.{src}`` and ``{prefix}.{tgt}`` with one segment per line. Everything that can
go wrong with them is reported by file name and line number, and nothing is dropped silently:

* a missing directory or file raises :class:`CorpusError` naming the path; a byte that is not UTF-8 names the file,
  line and byte;
* files of a split with different line counts raise :class:`CorpusError` naming both files and both counts;
* empty (or whitespace-only) lines are reported with their file and line numbers. Policy: in a *training* split the
  pair is dropped (the count and the first line numbers are printed); in an *evaluation* split it is kept, so that
  the hypotheses stay line-aligned with the references.
"""
import os
from dataclasses import dataclass, field
from typing import List, Tuple


class CorpusError(ValueError):
    """Bad input data; the message names the file(s) and what to do."""


@dataclass
class SplitReport:
    """What :func:`read_parallel_split` found in one split."""

    prefix: str
    n_lines: int
    empty: List[Tuple[str, int]] = field(default_factory=list)  # (file, 1-based line number)
    dropped: int = 0

    def describe(self) -> str:
        msg = f"{self.prefix}: {self.n_lines} pairs"
        if self.empty:
            where = ", ".join(f"{os.path.basename(f)}:{n}" for f, n in self.empty[:5])
            more = f" (and {len(self.empty) - 5} more)" if len(self.empty) > 5 else ""
            action = f"dropped {self.dropped} pairs (training split)" if self.dropped else "kept (evaluation split)"
            msg += f"; {len(self.empty)} empty lines at {where}{more}: {action}"
        return msg


def split_paths(data_dir: str, prefix: str, src: str, tgt: str) -> Tuple[str, str]:
    """Return the two file paths of a split, raising :class:`CorpusError` if the directory or a file is missing."""
    if not os.path.isdir(data_dir):
        raise CorpusError(
            f"data directory not found: {data_dir!r}. Pass the directory that holds {prefix}.{src} and "
            f"{prefix}.{tgt} (e.g. make demo DATA=/path/to/multi30k-en-de)."
        )
    paths = (os.path.join(data_dir, f"{prefix}.{src}"), os.path.join(data_dir, f"{prefix}.{tgt}"))
    for p in paths:
        if not os.path.isfile(p):
            present = sorted(f for f in os.listdir(data_dir) if not f.startswith("."))
            raise CorpusError(f"missing file {p!r}; the directory holds: {', '.join(present) or '(nothing)'}")
    return paths


def _read_lines(path: str) -> List[str]:
    """The lines of a UTF-8 file, without line breaks; a byte that is not UTF-8 raises :class:`CorpusError` naming
    the file, the line and the byte."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        bad = raw[e.start:e.end].hex(" ")
        raise CorpusError(
            f"{path}:{line}: byte 0x{bad} (column {column}) is not UTF-8 ({e.reason}). The corpus must be UTF-8 "
            f"text: convert the file (e.g. iconv -f latin1 -t utf-8 {os.path.basename(path)}) or fix that line"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line break ends the last line; it does not start a new one
    return [line.rstrip("\r") for line in lines]


def read_parallel_split(
    data_dir: str, prefix: str, src: str, tgt: str, training: bool
) -> Tuple[List[str], List[str], SplitReport]:
    """Read one split and apply the empty-line policy.

    Returns ``(source_lines, target_lines, report)``: lists of equal length, without line breaks.
    """
    src_path, tgt_path = split_paths(data_dir, prefix, src, tgt)
    src_lines, tgt_lines = _read_lines(src_path), _read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise CorpusError(
            f"line counts differ: {src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}. "
            "Parallel files must be line-aligned (one segment per line in both); fix or re-extract the corpus."
        )
    report = SplitReport(prefix=prefix, n_lines=len(src_lines))
    keep = []
    for i, (s, t) in enumerate(zip(src_lines, tgt_lines)):
        bad = False
        if not s.strip():
            report.empty.append((src_path, i + 1))
            bad = True
        if not t.strip():
            report.empty.append((tgt_path, i + 1))
            bad = True
        keep.append(not (bad and training))
    if training and not all(keep):
        report.dropped = keep.count(False)
        src_lines = [s for s, k in zip(src_lines, keep) if k]
        tgt_lines = [t for t, k in zip(tgt_lines, keep) if k]
    report.n_lines = len(src_lines)
    return src_lines, tgt_lines, report
