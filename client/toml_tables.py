"""An array of tables (``[[KEY]]``) in a TOML text, edited in place with tomlkit.

Everything a change does not touch stays as written: comments, blank lines,
key order, the spelling of values and any other content of the text.

Theory of operation: tomlkit keeps the blank lines and comments that follow
a table's last key inside that table, so a key added to it would land below
them, and removing the table would take the comments above the next table
with it. That text is therefore cut off every table up front into gaps:
``gaps[i]`` stands above the header of table i and ``gaps[-1]`` after the
last table (``gaps[0]`` starts empty: the preamble above the first table stays
in the document, untouched). Comment lines right above a header belong to
that table and leave with it; comment lines right after a table's last key
stay in the table; any other comment stays where it is. ``text()`` puts the
gaps back and renders the document.
"""

from __future__ import annotations

import re
from typing import Any

import tomlkit
from tomlkit.items import AoT, Comment, Table, Whitespace

__all__ = ["TableArray"]


class TableArray:
    """The tables under ``key`` in a TOML text. tomlkit's errors pass through."""

    def __init__(self, text: str, key: str) -> None:
        self.key = key
        self.doc = tomlkit.parse(text)
        found = self.doc.get(key)
        self.tables: list[Table] = list(found) if isinstance(found, AoT) else []
        self.gaps = [""] + [_cut_tail(table) for table in self.tables]
        if found is not None and not isinstance(found, AoT):  # the inline form, KEY = [{...}]
            self.doc.remove(key)
            for values in found.unwrap():
                self.append(values)

    def update(self, index: int, changes: dict[str, Any]) -> None:
        """Set the given fields of the table at ``index`` (None removes one); others stay as written."""
        table = self.tables[index]
        for field, value in changes.items():
            if value is None:
                table.pop(field, None)
            else:
                table[field] = value

    def append(self, values: dict[str, Any]) -> None:
        """Add a table of ``values`` (None ones left out) at the end of the text, after a blank line."""
        before = (self.tables[-1].as_string() if self.tables else self.doc.as_string()) + self.gaps[-1]
        gap = "" if not before or before.endswith("\n\n") else "\n" if before.endswith("\n") else "\n\n"
        table = tomlkit.table()
        for field, value in values.items():
            if value is not None:
                table[field] = value
        if self.key not in self.doc:
            self.doc[self.key] = tomlkit.aot()
        self.doc[self.key].append(table)
        table.trivia.indent = ""  # tomlkit may add a newline of its own: the gap holds the spacing
        self.tables.append(table)
        self.gaps[-1] += gap
        self.gaps.append("")

    def remove(self, index: int) -> None:
        """Remove the table at ``index`` with the comment lines right above its header."""
        rest_before, _ = _split_lead(self.gaps[index])
        rest_after, lead_next = _split_lead(self.gaps[index + 1])
        # Of the two blank runs around the table one goes; comments in them stay.
        rest = (rest_after if "#" not in rest_before else
                rest_before if "#" not in rest_after else rest_before + rest_after)
        if index == 0 and self._open_above():
            rest = re.sub(r"\A(?:[ \t]*\r?\n)+", "", rest)  # no blank lines twice at the top
        gap = rest + lead_next
        if index == len(self.tables) - 1 and "#" not in gap:
            gap = ""  # the text ends with the table before
        del self.doc[self.key][index]
        del self.tables[index]
        self.gaps[index:index + 2] = [gap]
        if not self.tables:
            self.doc.remove(self.key)  # tomlkit would write an empty array as "KEY = []"

    def _open_above(self) -> bool:
        """Whether the text above the first table is empty or ends with a blank line."""
        last = None
        for key, item in self.doc.body:
            if key is not None and key.key == self.key:
                break
            last = item
        return last is None or (isinstance(last, Whitespace) and "\n" in last.as_string())

    def text(self) -> str:
        """The new text (call once: it puts the gaps back into the document)."""
        add = self.tables[-1].raw_append if self.tables else self.doc.append  # raw: no indent copied
        for _, item in tomlkit.parse(self.gaps[-1]).body:
            add(None, item)
        for table, gap in zip(self.tables, self.gaps):
            table.trivia.indent = gap + table.trivia.indent
        return self.doc.as_string()


def _cut_tail(table: Table) -> str:
    """Take off and return what follows a table's keys and the comment lines right after them."""
    body = table.value.body  # only trailing keyless items go: tomlkit's index of the keys stays valid
    start = len(body)
    while start and body[start - 1][0] is None:
        start -= 1
    while start < len(body) and isinstance(body[start][1], Comment):
        start += 1
    tail = "".join(item.as_string() for _, item in body[start:])
    del body[start:]
    return tail


def _split_lead(gap: str) -> tuple[str, str]:
    """A gap (blank and comment lines) split before the comment lines that end it."""
    lines = gap.splitlines(keepends=True)
    cut = len(lines)
    while cut and lines[cut - 1].lstrip().startswith("#"):
        cut -= 1
    return "".join(lines[:cut]), "".join(lines[cut:])
