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
