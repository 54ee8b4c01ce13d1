"""The README results section is replaced between its markers, and refused without them."""
import pytest

from scripts_loader import load_script

update = load_script("update_readme_results")


def test_replaces_only_the_marked_section():
    text = "intro\n<!-- bench:begin -->\nold table\n<!-- bench:end -->\noutro\n"
    out = update.replace_section(text, "| new | table |")
    assert out == "intro\n<!-- bench:begin -->\n| new | table |\n<!-- bench:end -->\noutro\n"
    assert update.replace_section(out, "x") .count("bench:begin") == 1


def test_missing_markers_are_refused():
    with pytest.raises(ValueError, match="no <!-- bench:begin -->"):
        update.replace_section("no markers here", "x")


def test_named_sections_and_dropped_report_parts():
    text = "a\n<!-- bench:begin -->\nB\n<!-- bench:end -->\n<!-- bnb-table:begin -->\nold\n<!-- bnb-table:end -->\n"
    out = update.replace_section(text, "new", "bnb-table")
    assert out == "a\n<!-- bench:begin -->\nB\n<!-- bench:end -->\n<!-- bnb-table:begin -->\nnew\n<!-- bnb-table:end -->\n"
    with pytest.raises(ValueError, match="no <!-- deer-table:begin -->"):
        update.replace_section(text, "x", "deer-table")
    report = "# T\n- run\n\n| table |\n\n## NAR / AR ratios\n\nr1\n## Batch-1 profile\np\n## Quality\n\n- q\n"
    assert update.drop_sections(report, {"NAR / AR ratios", "Batch-1 profile"}) == "# T\n- run\n\n| table |\n\n## Quality\n\n- q\n"
    assert update.drop_sections(report, set()) == report


REPORT = """# NAR decoding benchmark (full mode)

- run: 2026-11-22T11:15:52, 2782 s in all
- machine: AMD EPYC

| system | params (M) | speed-up vs AR | sent/s @batch 64 | x AR | sent/s @max-tokens 4096 | x AR | sacreBLEU |
|---|---|---|---|---|---|---|---|
| transformer greedy | 7.58 | 1.00x | 48.6 | 1.00 | 57.3 | 1.00 | 11.89 |
| deer CTC | 7.13 | 5.18x | 64.6 | 1.33 | 58.5 | 1.05 | 0.00 |

## NAR / AR ratios

```
deer CTC / transformer greedy: batch-1 latency ratio 0.19
```
"""


def test_table_only_keeps_the_results_table_and_the_chosen_columns():
    table = update.results_table(REPORT)
    assert table.splitlines()[0].startswith("| system |") and len(table.splitlines()) == 4
    assert "machine" not in table and "ratios" not in table
    out = update.select_columns(table, ["system", "x AR @batch 64", "x AR @max-tokens 4096", "sacreBLEU"])
    assert out.splitlines() == [
        "| system | x AR @batch 64 | x AR @max-tokens 4096 | sacreBLEU |", "|---|---|---|---|",
        "| transformer greedy | 1.00 | 1.00 | 11.89 |", "| deer CTC | 1.33 | 1.05 | 0.00 |"]
    with pytest.raises(ValueError, match=r"no column \['x AR'\]"):
        update.select_columns(table, ["system", "x AR"])  # ambiguous: named by its throughput column
    with pytest.raises(ValueError, match="no markdown table"):
        update.results_table("# title\n\n- no table\n")


def test_main_writes_the_short_table_into_one_file_and_the_full_report_into_another(tmp_path):
    report = tmp_path / "report.md"
    report.write_text(REPORT)
    readme, full = tmp_path / "README.md", tmp_path / "benchmark.md"
    readme.write_text("top\n<!-- bench:begin -->\nRESULTS_PLACEHOLDER\n<!-- bench:end -->\nbottom\n")
    full.write_text("# Benchmark\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n")
    update.main(["--readme", str(readme), "--report", str(report), "--table-only", "--columns", "system",
                 "sacreBLEU", "--note", "made by a test", "--footer", "Full report: [benchmark.md](benchmark.md)"])
    assert readme.read_text() == ("top\n<!-- bench:begin -->\n_made by a test_\n\n| system | sacreBLEU |\n|---|---|\n"
                                  "| transformer greedy | 11.89 |\n| deer CTC | 0.00 |\n\n"
                                  "Full report: [benchmark.md](benchmark.md)\n<!-- bench:end -->\nbottom\n")
    update.main(["--readme", str(full), "--report", str(report)])
    assert "- machine: AMD EPYC" in full.read_text() and "## NAR / AR ratios" in full.read_text()
    with pytest.raises(SystemExit, match="no column"):
        update.main(["--readme", str(readme), "--report", str(report), "--table-only", "--columns", "BLEU"])
