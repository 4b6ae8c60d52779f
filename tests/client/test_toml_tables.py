"""Arrays of tables edited in place: the corners of the text around the tables."""

from __future__ import annotations

import pytest

from client.toml_tables import TableArray


def edited(text: str, change) -> str:
    """``text`` after ``change(tables)`` on its ``[[t]]`` tables."""
    tables = TableArray(text, "t")
    change(tables)
    return tables.text()


def test_untouched_text_comes_back_as_it_was():
    """Without a change the text is rendered exactly as it was read."""
    text = '# top\n\n[[t]]  # one\na = 1\n# own\n\n# lead\n  [[t]]\n  a = "x"\n\n# end'
    assert edited(text, lambda t: None) == text


def test_appending_to_a_text_without_a_final_newline():
    """A table added after a last line that lacks its newline still starts on its own line."""
    assert edited('[[t]]\na = 1', lambda t: t.append({"a": 2, "b": None})) == '[[t]]\na = 1\n\n[[t]]\na = 2\n'


def test_comment_lines_right_after_the_last_key_stay_with_the_table():
    """New keys follow them, and removing the next table leaves them (they may be commented-out keys)."""
    text = '[[t]]\na = 1\n# b = 2\n[[t]]\na = 3\n'
    expected = '[[t]]\na = 1\n# b = 2\nc = true\n[[t]]\na = 3\n'
    assert edited(text, lambda t: t.update(0, {"c": True})) == expected
    assert edited(text, lambda t: t.remove(1)) == '[[t]]\na = 1\n# b = 2\n'


def test_removing_the_only_table_keeps_the_comments_around_it():
    """The last table gone, the text keeps the comments above and below it (those right above
    the first table belong to the top of the text) and holds no empty array."""
    text = '# top\n\n# about it\n[[t]]\na = 1\n\n# end\n'
    assert edited(text, lambda t: t.remove(0)) == '# top\n\n# about it\n\n# end\n'
    assert edited('[[t]]\na = 1\n', lambda t: t.remove(0)) == ''


@pytest.mark.parametrize("top, spacing", [("# top\n", "\n"), ("# top\n\n", ""), ("", "")])
def test_removing_the_first_table_keeps_one_blank_line_below_the_top(top, spacing):
    """The next table moves up under the top comment, one blank line between them."""
    text = top + '[[t]]\na = 1\n\n# apart\n\n# lead\n[[t]]\na = 2\n'
    assert edited(text, lambda t: t.remove(0)) == top + spacing + '# apart\n\n# lead\n[[t]]\na = 2\n'


def test_a_removed_table_takes_one_blank_run_and_keeps_comments_standing_apart():
    """Removing a middle table drops the blank lines on one side only; a comment block with
    blank lines on both sides stays."""
    text = '[[t]]\na = 1\n\n# apart\n\n[[t]]\na = 2\n\n[[t]]\na = 3\n'
    assert edited(text, lambda t: t.remove(1)) == '[[t]]\na = 1\n\n# apart\n\n[[t]]\na = 3\n'


def test_the_inline_form_becomes_tables():
    """Tables written inline (t = [{...}]) are rewritten as [[t]] tables, the rest kept."""
    text = '# top\nt = [{a = 1}, {a = 2}]\n'
    assert edited(text, lambda t: t.update(1, {"a": 5})) == '# top\n\n[[t]]\na = 1\n\n[[t]]\na = 5\n'
