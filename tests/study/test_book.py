"""End to end: execute the five notebooks with the tiny profile and render the offline book.

The project is copied to a temporary folder so that the test never touches the user's own
``book/`` or ``runs/``. The rendered pages are then opened in headless Chromium with the
network off.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from brainage.study.book import build, convert_notebook, discover_notebooks
from brainage.study.provenance import read_provenance

from . import browser

NOTEBOOKS = ["01_data_audit", "02_training", "03_evaluation", "04_interpretability", "05_clinical"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "_artifacts"
REMOTE = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//",
                    re.IGNORECASE)


@pytest.fixture(scope="module")
def built(copy_project, tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("project"))
    report = build("tiny", root=root)
    return root, report


@pytest.mark.slow
def test_build_executes_every_notebook_in_order(built):
    root, report = built
    assert list(report.notebooks) == NOTEBOOKS
    for stem in NOTEBOOKS:
        assert (root / "book" / "results" / f"{stem}.ipynb").exists()
        assert (root / "book" / "_build" / "html" / "results" / f"{stem}.html").exists()
    record = read_provenance(report.run_dir)
    assert record["profile"] == "tiny"
    assert set(record["notebooks"]) == set(NOTEBOOKS)
    assert record["environment"]["packages"]["torch"]
    appendix = (root / "book" / "_build" / "html" / "appendix.html").read_text()
    assert "Wall time of each notebook" in appendix and "01_data_audit" in appendix


@pytest.mark.slow
def test_code_cells_are_folded(built):
    import nbformat

    root, _ = built
    nb = nbformat.read(root / "book" / "results" / "01_data_audit.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all("hide-input" in c.metadata.get("tags", []) for c in code)


@pytest.mark.slow
def test_html_loads_nothing_from_the_network(built):
    root, _ = built
    pages = list((root / "book" / "_build" / "html").rglob("*.html"))
    assert len(pages) >= 10  # every file, theme assets included: none may load remote content
    offenders = {str(p): REMOTE.findall(p.read_text(encoding="utf-8")) for p in pages}
    assert not {p: hits for p, hits in offenders.items() if hits}
    assert (root / "book" / "_build" / "html" / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert (root / "book" / "_build" / "html" / "_static" / "plotly.min.js").exists()


def _visible_text(page: Path) -> str:
    """What a reader sees on a page: no scripts, styles, typeset math or (folded) code input."""
    import html as html_lib

    source = page.read_text(encoding="utf-8")
    for pattern in (r"<(script|style)\b[^>]*>.*?</\1>", r"<pre\b[^>]*>.*?</pre>",
                    r'<span class="math[^"]*">.*?</span>', r'<div class="math[^"]*">.*?</div>'):
        source = re.sub(pattern, " ", source, flags=re.S)
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", source))


@pytest.mark.slow
def test_pages_show_no_raw_latex_and_no_machine_paths(built):
    root, _ = built
    html = root / "book" / "_build" / "html"
    pages = sorted(p for p in html.rglob("*.html") if p.name not in {"genindex.html", "search.html"}
                   and not p.relative_to(html).parts[0].startswith("_"))
    assert len(pages) >= 9
    for page in pages:
        text = _visible_text(page)
        raw = [token for token in ("$", "\\max", "_{", "^{") if token in text]
        assert not raw, f"{page.name}: raw LaTeX {raw} outside MathJax"
        assert str(root) not in text and "/tmp/" not in text, f"{page.name}: a machine path"


def test_visible_text_leaves_out_math_and_code(tmp_path):
    page = tmp_path / "p.html"
    page.write_text('<p>a <span class="math notranslate">\\(x_{1}\\)</span> b</p>'
                    '<pre>f"{x}_{y}"</pre><script>var a = "$";</script><p>c $ d</p>')
    text = _visible_text(page)
    assert "x_{1}" not in text and "_{y}" not in text and "var a" not in text and "c $ d" in text


def test_convert_requires_one_parameters_cell(tmp_path):
    from brainage.study.book import BuildError

    src = tmp_path / "01_x.py"
    src.write_text("# %%\nx = 1\n")
    with pytest.raises(BuildError, match=r"01_x.py: expected exactly one cell tagged 'parameters', found 0"):
        convert_notebook(src, tmp_path / "out.ipynb")


def test_repository_notebooks_have_one_parameters_cell(repo_root, tmp_path):
    sources = discover_notebooks(repo_root / "notebooks")
    assert [s.stem for s in sources] == NOTEBOOKS
    for src in sources:
        convert_notebook(src, tmp_path / f"{src.stem}.ipynb")


@pytest.mark.slow
@pytest.mark.browser
def test_book_reads_offline_in_chromium(built):
    """Every page loads with the network off, without console errors and without a request
    leaving the machine; equations typeset, plotly figures and the nilearn viewer draw."""
    reason = browser.skip_reason()
    if reason:
        pytest.skip(reason)
    root, _ = built
    html = root / "book" / "_build" / "html"
    pages = sorted(p for p in html.rglob("*.html")  # the book's pages, not the theme's assets
                   if p.name not in {"genindex.html", "search.html"}
                   and not p.relative_to(html).parts[0].startswith("_"))
    driver = browser.start()
    seen: dict[str, dict] = {}
    try:
        for page in pages:
            name = str(page.relative_to(html))
            seen[name] = browser.visit(driver, page)
            n_math = driver.execute_script("return document.querySelectorAll('.math').length")
            if n_math:  # MathJax, served from _static, typesets every equation
                assert browser.wait_for(
                    driver, "document.querySelectorAll('mjx-container').length > 0"), name
            n_plot = driver.execute_script("return document.querySelectorAll('.plotly-graph-div').length")
            if n_plot:  # plotly.js, served from _static, draws every figure
                assert browser.wait_for(
                    driver, f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n_plot}"
                ), f"{name}: {n_plot} plotly figures did not all draw"
            seen[name]["math"], seen[name]["plots"] = n_math, n_plot
            seen[name]["errors"] += [e["message"] for e in driver.get_log("browser")
                                     if e["level"] == "SEVERE"]
        # The nilearn viewer (an iframe with brainsprite) draws its canvas.
        driver.get((html / "results" / "04_interpretability.html").as_uri())
        frames = driver.find_elements("tag name", "iframe")
        assert frames, "no nilearn viewer on the interpretability page"
        driver.switch_to.frame(frames[0])
        assert browser.wait_for(driver, "document.querySelectorAll('canvas').length > 0 && "
                                        "document.querySelector('canvas').width > 0")
        driver.switch_to.default_content()
        ARTIFACTS.mkdir(exist_ok=True)
        driver.get((html / "results" / "03_evaluation.html").as_uri())
        browser.wait_for(driver, "document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        driver.save_screenshot(str(ARTIFACTS / "results_page.png"))
    finally:
        driver.quit()
    assert len(seen) >= 10
    for name, info in seen.items():
        assert info["errors"] == [], f"{name}: console errors {info['errors']}"
        remote = [u for u in info["requests"] if not u.startswith(("file:", "data:", "blob:"))]
        assert remote == [], f"{name}: requests left the machine: {remote}"
    assert seen["methods.html"]["math"] > 0
    assert all(seen[f"results/{stem}.html"]["plots"] > 0 for stem in NOTEBOOKS)
    assert (ARTIFACTS / "results_page.png").stat().st_size > 10_000
