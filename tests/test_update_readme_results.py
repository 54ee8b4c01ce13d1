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
