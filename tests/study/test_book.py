"""End to end: execute the five notebooks with the tiny profile and render the offline book.

The project is copied to a temporary folder so that the test never touches the user's own
``book/`` or ``runs/``. The rendered pages are then opened in headless Chromium with the
network off.
"""

from __future__ import annotations

import json
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
        # on a loaded machine get() can return before the page is parsed: wait for the frame
        browser.wait_for(driver, "document.readyState === 'complete' && "
                                 "document.querySelectorAll('iframe').length > 0")
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


#: A machine's own folders in rendered text (the project's paths are shown relative to it).
ABSOLUTE_PATH = re.compile(r"(?:^|[\s(\[`'\"=:])(/(?:tmp|home|work|Users|root|var|mnt|opt|srv|private)/\S*"
                           r"|[A-Z]:\\\S+)")
#: Missing values that leaked into the text instead of "not estimable" or "n/a".
MISSING = re.compile(r"\b(?:nan|NaN|None)\b")
RAW_LATEX = ("$", "\\max", "_{", "^{", "\\(", "\\[", "\\frac", "\\mathrm")
#: MyST roles and directives shown as their source (a notebook's displayed Markdown that was
#: not parsed as MyST: "{glue:text}`x`" or "```{glue:figure} x" instead of the value).
RAW_MYST = re.compile(r"\{(?:glue|numref|cite|ref|doc)(?::[a-z]+)?\}")


def reader_findings(found: dict, root: Path) -> list[str]:
    """The problems a reader would see on a page, from :data:`browser.READER_CHECKS`."""
    text = found["text"]
    problems = [f"raw LaTeX {token!r}: ...{text[max(0, text.index(token) - 60):text.index(token) + 20]!r}"
                for token in RAW_LATEX if token in text]
    if found["mathErrors"]:
        problems.append(f"{found['mathErrors']} MathJax errors")
    problems += [f"table wider than the column: {t}" for t in found["wideTables"]]
    if found.get("pageOverflow", 0) > 1:
        problems.append(f"the page scrolls sideways by {found['pageOverflow']} px")
    problems += [f"table without a numbered caption: {t}" for t in found["uncaptionedTables"]]
    problems += [f"figure without a numbered caption: {f}" for f in found["uncaptionedFigures"]]
    problems += [f"absolute path {m.group(1)!r}" for m in ABSOLUTE_PATH.finditer(text)]
    if str(root) in text:
        problems.append(f"the build's own folder {root}")
    problems += [f"missing value {m.group(0)!r}: ...{text[max(0, m.start() - 60):m.end() + 20]!r}"
                 for m in MISSING.finditer(text)]
    problems += [f"raw MyST {m.group(0)!r}: ...{text[max(0, m.start() - 60):m.end() + 40]!r}"
                 for m in RAW_MYST.finditer(text)]
    return problems


def test_reader_findings_catch_each_defect(tmp_path):
    clean = {"text": "MAE 4.42 years (not estimable)", "mathErrors": 0, "wideTables": [],
             "uncaptionedTables": [], "uncaptionedFigures": []}
    assert reader_findings(clean, tmp_path) == []
    dirty = {"text": f"x $a_{{1}}$ at /tmp/run/simulation.json and {tmp_path}/b, rho nan, None"
                     " {glue:text}`n_retest` subjects",
             "mathErrors": 1, "pageOverflow": 40, "wideTables": ["tab-1: 900 px"], "uncaptionedTables": ["t"],
             "uncaptionedFigures": ["div"]}
    found = " | ".join(reader_findings(dirty, tmp_path))
    for text in ("raw LaTeX '$'", "raw LaTeX '_{'", "MathJax errors", "wider than the column",
                 "table without", "figure without", "absolute path '/tmp/run/simulation.json'",
                 "the build's own folder", "missing value 'nan'", "missing value 'None'",
                 "scrolls sideways by 40 px", "raw MyST '{glue:text}'"):
        assert text in found, text


@pytest.mark.slow
@pytest.mark.browser
def test_every_page_reads_as_a_paper_in_chromium(built):
    """Each page, as Chromium renders it offline, screenshotted whole: no raw LaTeX, no table
    wider than the content column, a numbered caption on every figure and table, no absolute
    path and no nan/NaN/None in the text. Screenshots: tests/_artifacts/pages/."""
    reason = browser.skip_reason()
    if reason:
        pytest.skip(reason)
    root, _ = built
    html = root / "book" / "_build" / "html"
    pages = sorted(p for p in html.rglob("*.html")
                   if p.name not in {"genindex.html", "search.html", "index.html"}
                   and not p.relative_to(html).parts[0].startswith("_"))
    shots = ARTIFACTS / "pages"
    driver = browser.start()
    problems: dict[str, list[str]] = {}
    nav: set[str] = set()
    try:
        for page in pages:
            name = str(page.relative_to(html))
            browser.visit(driver, page)
            if driver.execute_script("return document.querySelectorAll('.math').length"):
                browser.wait_for(driver, "document.querySelectorAll('mjx-container').length > 0 && "
                                         "!document.querySelector('.math:not(:has(mjx-container))')")
            n_plot = driver.execute_script("return document.querySelectorAll('.plotly-graph-div').length")
            browser.wait_for(driver, "document.querySelectorAll('.js-plotly-plot .main-svg')"
                                     f".length >= {n_plot}")
            browser.screenshot_full_page(driver, shots / (name.replace("/", "__") + ".png"))
            found = driver.execute_script(browser.READER_CHECKS)
            problems[name] = reader_findings(found, root)
            if len(found["text"].split()) < 100:
                problems[name].append(f"an empty page: {len(found['text'].split())} words")
            nav |= set(driver.execute_script(
                "return [...document.querySelectorAll('.bd-sidebar-primary a.reference.internal')]"
                ".map(a => a.href.split('#')[0])"))
    finally:
        driver.quit()
    (ARTIFACTS / "reader_findings.json").write_text(json.dumps(problems, indent=2))
    assert len(problems) >= 10
    # every page the navigation offers is one of the checked (non-empty) pages; no empty index
    visited = {page.resolve().as_uri() for page in pages}
    assert nav and nav <= visited, sorted(nav - visited)
    assert not (html / "genindex.html").exists()
    assert all((shots / (n.replace("/", "__") + ".png")).stat().st_size > 10_000 for n in problems)
    bad = {name: found for name, found in problems.items() if found}
    assert not bad, json.dumps(bad, indent=2)
