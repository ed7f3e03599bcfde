"""Sphinx extension that keeps the book readable offline.

Jupyter Book 1 always loads sphinx-thebe, which puts an inline script with a CDN address (and,
because the extension is set up twice, a duplicate ``const`` declaration that raises a
SyntaxError in the browser) on every page. Live code is not offered by this book, so the thebe
scripts and stylesheet are removed from every page here.
"""

from __future__ import annotations

from typing import Any


def _is_thebe(asset: Any) -> bool:
    text = " ".join(str(part) for part in (asset, getattr(asset, "filename", ""),
                                            getattr(asset, "attributes", {}).get("body", "")))
    return "thebe" in text.lower()


def _strip_thebe(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if not _is_thebe(asset)]


def setup(app: Any) -> dict[str, Any]:
    # Priority 900: run after the theme and extensions have added their assets.
    app.connect("html-page-context", _strip_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
