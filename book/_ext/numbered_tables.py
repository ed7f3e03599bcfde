"""Sphinx extension: results tables pasted from the notebooks are numbered as *tables*.

The notebooks glue each results table (a pandas ``Styler`` from
``brainage.study.tables.report_table``) and the pages show it with myst-nb's
``{glue:figure}`` directive, which wraps any output in a figure. A figure named ``tab-...``
(the book's convention: ``tab-<notebook>-<name>``) is turned here into a numbered table: it
counts with the other tables ("Table N", not "Fig. N"), its caption goes above it, and
``{numref}`` refers to it as a table. Figures named otherwise are left alone.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.transforms import SphinxTransform

#: Prefix of the names that mark a pasted output as a table.
TABLE_PREFIX = "tab-"


class pasted_table(nodes.figure):  # noqa: N801 (docutils node classes are lower case)
    """A pasted notebook output that is numbered and captioned as a table."""


def _title(node: nodes.Element) -> str:
    for child in node.children:
        if isinstance(child, nodes.caption):
            return child.astext()
    return ""


def _visit(translator: Any, node: pasted_table) -> None:
    translator.visit_figure(node)


def _depart(translator: Any, node: pasted_table) -> None:
    translator.depart_figure(node)


class PastedTables(SphinxTransform):
    """Turn ``tab-`` figures into :class:`pasted_table` nodes, caption first."""

    default_priority = 200  # before the figure numbers are collected (after reading)

    def apply(self, **kwargs: Any) -> None:
        for figure in list(self.document.findall(nodes.figure)):
            if isinstance(figure, pasted_table):
                continue
            if not any(str(n).startswith(TABLE_PREFIX) for n in figure["ids"] + figure["names"]):
                continue
            table = pasted_table(figure.rawsource, **figure.attributes)
            table["classes"] = [*figure["classes"], "pasted-table"]
            captions = [c for c in figure.children if isinstance(c, (nodes.caption, nodes.legend))]
            others = [c for c in figure.children if c not in captions]
            table.extend([c.deepcopy() for c in captions] + [c.deepcopy() for c in others])
            figure.replace_self(table)
            for node_id in table["ids"]:  # {numref} finds its target through document.ids
                self.document.ids[node_id] = table


def setup(app: Any) -> dict[str, Any]:
    app.add_enumerable_node(pasted_table, "table", _title, html=(_visit, _depart),
                            latex=(_visit, _depart), text=(_visit, _depart))
    app.add_transform(PastedTables)
    app.add_css_file("tables.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
