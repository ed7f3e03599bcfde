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
from tests.conftest import REPO_ROOT, copy_project_into

from . import browser

NOTEBOOKS = ["01_data_audit", "02_training", "03_evaluation", "04_interpretability", "05_clinical"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "_artifacts"
REMOTE = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//",
                    re.IGNORECASE)


def build_tiny(folder: Path):
    """A copy of the project built with the tiny profile: :func:`built`, computed in the
    background process of tests/conftest.py."""
    root = copy_project_into(REPO_ROOT, folder)
    report = build("tiny", root=root)
    return root, report


@pytest.fixture(scope="module")
def built(background):
    return background.result("built")


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
def test_the_card_records_the_test_error_that_predict_prints(built):
    """Notebook 03 writes each head's test MAE into the model card (``brainage predict`` prints
    it with the domain); it equals metrics.json's raw MAE."""
    from brainage.inference.trust import describe_model

    root, report = built
    card = json.loads((report.run_dir / "models" / "model.json").read_text())
    metrics = json.loads((report.run_dir / "metrics.json").read_text())
    for head in ("rnc", "l1"):
        recorded = card["test_error"][head]
        assert recorded["mae_years"] == pytest.approx(
            metrics["models"][head]["raw"]["mae"]["value"], rel=1e-9)
        assert recorded["n"] == metrics["n_test"] and recorded["simulated"] is True
    assert f"test MAE on {metrics['n_test']} held-out simulated scans" in describe_model(
        report.run_dir / "models")


@pytest.mark.slow
def test_reference_benchmark_reads_the_run_and_agrees_with_notebook_04(built, monkeypatch):
    """benchmarks/bench_ig_reference.py (the mean-scan maps the build leaves out): both
    references for both heads, the same predicted reference ages as notebook 04, shares and
    AUCs in range, and the run folder untouched."""
    import pandas as pd

    from brainage.study.runs import RunFolder

    root, report = built
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_ig_reference

    before = sorted(p for p in report.run_dir.rglob("*"))
    table, seconds = bench_ig_reference.reference_effect(RunFolder(report.run_dir), ig_steps=4)
    assert sorted(p for p in report.run_dir.rglob("*")) == before and seconds > 0
    assert sorted(zip(table["model"], table["reference"])) == [
        ("L1", "mean scan"), ("L1", "typical scan"), ("RNC", "mean scan"), ("RNC", "typical scan")]
    notebook = pd.read_csv(report.run_dir / "saliency" / "reference_effect.csv")
    merged = table.assign(model=table["model"].str.lower()).merge(notebook,
                                                                  on=["model", "reference"])
    assert len(merged) == 4
    assert merged["reference predicted (y)"].to_numpy() == pytest.approx(
        merged["reference predicted"].to_numpy(), abs=1e-3)
    assert table["median positive share (%)"].between(0, 100).all()
    assert table["median ageing AUC"].between(0, 1).all()


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


#: Rendered pages the browser tests skip: Sphinx's index and search pages (not the book's).
_NOT_BOOK_PAGES = {"genindex.html", "search.html"}


@pytest.fixture(scope="module")
def browsed(built):
    """Every page of the built book opened once in headless Chromium, network off, for both
    browser tests (one visit instead of one per test): per page its console errors and
    requests (:func:`browser.visit`), whether its equations typeset and its plotly figures
    drew, a full-page screenshot (tests/_artifacts/pages/), what :data:`browser.READER_CHECKS`
    found, its HTML and the navigation's links. Yields the driver with them, then quits it."""
    reason = browser.skip_reason()
    if reason:
        pytest.skip(reason)
    root, _ = built
    html = root / "book" / "_build" / "html"
    pages = sorted(p for p in html.rglob("*.html")  # the book's pages, not the theme's assets
                   if p.name not in _NOT_BOOK_PAGES
                   and not p.relative_to(html).parts[0].startswith("_"))
    shots = ARTIFACTS / "pages"
    driver = browser.start()
    seen: dict[str, dict] = {}
    try:
        for page in pages:
            name = str(page.relative_to(html))
            info = seen[name] = browser.visit(driver, page)
            info["math"] = driver.execute_script("return document.querySelectorAll('.math').length")
            if info["math"]:  # MathJax, served from _static, typesets every equation
                browser.wait_for(driver, "document.querySelectorAll('mjx-container').length > 0 && "
                                         "!document.querySelector('.math:not(:has(mjx-container))')")
            info["typeset"] = bool(driver.execute_script(
                "return document.querySelectorAll('mjx-container').length > 0"))
            info["plots"] = driver.execute_script(
                "return document.querySelectorAll('.plotly-graph-div').length")
            # plotly.js, served from _static, draws every figure
            info["drawn"] = bool(browser.wait_for(
                driver, "document.querySelectorAll('.js-plotly-plot .main-svg')"
                        f".length >= {info['plots']}"))
            info["errors"] += [e["message"] for e in driver.get_log("browser")
                               if e["level"] == "SEVERE"]
            browser.screenshot_full_page(driver, shots / (name.replace("/", "__") + ".png"))
            info["found"] = driver.execute_script(browser.READER_CHECKS)
            info["source"] = driver.page_source
            info["nav"] = driver.execute_script(
                "return [...document.querySelectorAll('.bd-sidebar-primary a.reference.internal')]"
                ".map(a => a.href.split('#')[0])")
            # the screenshot's resizing is not a reader's visit: its console messages are
            # dropped (as before the two tests shared this visit); its requests still count
            driver.get_log("browser")
            info["requests"] += [json.loads(e["message"])["message"]["params"]["request"]["url"]
                                 for e in driver.get_log("performance")
                                 if json.loads(e["message"])["message"]["method"]
                                 == "Network.requestWillBeSent"]
        yield driver, html, seen
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.browser
def test_book_reads_offline_in_chromium(browsed):
    """Every page loads with the network off, without console errors and without a request
    leaving the machine; equations typeset, plotly figures and the nilearn viewer draw."""
    driver, html, seen = browsed
    for name, info in seen.items():
        if info["math"]:
            assert info["typeset"], name
        if info["plots"]:
            assert info["drawn"], f"{name}: {info['plots']} plotly figures did not all draw"
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
    problems += [f"bold text in the abstract: {t!r}" for t in found.get("boldAbstract", [])]
    problems += [f"figure without a numbered caption: {f}" for f in found["uncaptionedFigures"]]
    problems += [f"absolute path {m.group(1)!r}" for m in ABSOLUTE_PATH.finditer(text)]
    if str(root) in text:
        problems.append(f"the build's own folder {root}")
    problems += [f"missing value {m.group(0)!r}: ...{text[max(0, m.start() - 60):m.end() + 20]!r}"
                 for m in MISSING.finditer(text)]
    problems += [f"raw MyST {m.group(0)!r}: ...{text[max(0, m.start() - 60):m.end() + 40]!r}"
                 for m in RAW_MYST.finditer(text)]
    return problems


#: Python's own text for values, shown to a reader: a dict, list or tuple repr (with Sphinx's
#: smart quotes too: ‘HC’), numpy's.
_Q = "['\u2018\u2019\"]"
PYTHON_REPR = re.compile(rf"\{{\s*{_Q}[^'\u2018\u2019\"]*{_Q}\s*:"
                         rf"|\[\s*{_Q}[^'\u2018\u2019\"]*{_Q}\s*(?:,|\])"
                         rf"|\(\s*{_Q}[^'\u2018\u2019\"]*{_Q}\s*,"
                         r"|\bnp\.\w+\(|\barray\(\[")
#: A bare True/False (a printed bool: "skull-stripped: True)"), not the word at a sentence start.
BOOLEAN = re.compile(r"(?<![\w-])(?:True|False)(?=\s*(?:[,.;:)\]}]|$))")
NOT_AVAILABLE = re.compile(r"(?<![\w/])n/a(?![\w/])")
#: A code identifier where a reader expects a name: snake_case, or a lowercase model name.
IDENTIFIER = re.compile(r"\b[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+\b|\b(?:rnc|l1)\b")
#: What a figure shows; a figure with none of these has only its caption.
FIGURE_CONTENT = ("img", "svg", "canvas", "iframe", "table", "video", "object")
EMPTY_PLOTLY = re.compile(r"Plotly\.newPlot\(\s*[\"'][^\"']+[\"']\s*,\s*\[\s*\]")


def _article(source: str):
    """The content column of a built page, without code, scripts, styles and typeset math."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(source, "html.parser")
    article = soup.select_one(".bd-article") or soup.find("main") or soup
    return article


def _prose(article) -> str:
    """The running text a reader sees: paragraphs, list items and captions (not tables, code)."""
    import copy

    clone = copy.copy(article)
    for node in clone.select("pre, script, style, .cell_input, mjx-container, .math, table, "
                             ".headerlink"):
        node.decompose()
    return " ".join(clone.get_text(" ").split())


def presentation_findings(source: str) -> list[str]:
    """The presentation defects of one built page (issue 32), from its HTML.

    Python reprs, booleans and "n/a" in the prose; code identifiers in table headers (and whole
    cells that are one); a bold paragraph in the abstract; a figure with nothing but its caption
    (or a plotly figure without data); a long sentence printed twice.
    """
    article = _article(source)
    prose = _prose(article)
    problems = [f"Python repr {m.group(0)!r}: ...{prose[max(0, m.start() - 50):m.end() + 30]!r}"
                for m in PYTHON_REPR.finditer(prose)]
    problems += [f"a printed bool {m.group(0)!r}: ...{prose[max(0, m.start() - 50):m.end() + 10]!r}"
                 for m in BOOLEAN.finditer(prose)]
    problems += [f"'n/a' in the text: ...{prose[max(0, m.start() - 50):m.end() + 10]!r}"
                 for m in NOT_AVAILABLE.finditer(prose)]
    for table in article.find_all("table"):
        name = (table.find_parent(id=True) or {}).get("id", "table")
        for cell in table.find_all("th"):
            text = " ".join(cell.get_text(" ").split())
            if IDENTIFIER.search(text):
                problems.append(f"identifier in a table header of {name}: {text!r}")
        for cell in table.find_all("td"):  # a parameter's name is code on purpose (<code>)
            text = cell.get_text().strip()
            if cell.find("code") is None and re.fullmatch(r"[a-z]+(?:_[a-z]+)+", text):
                problems.append(f"identifier in a table cell of {name}: {text!r}")
    abstract = article.find(id="abstract")
    if abstract is not None and abstract.find(["strong", "b"]):
        problems.append("bold text in the abstract: "
                        f"{abstract.find(['strong', 'b']).get_text()!r}")
    for figure in article.find_all("figure"):  # a pasted table sits inside its <figcaption>
        if not any(c.name in FIGURE_CONTENT or "plotly-graph-div" in (c.get("class") or [])
                   for c in figure.find_all(True)):
            caption = figure.find("figcaption")
            problems.append("a figure with nothing but its caption: "
                            f"{(caption.get_text(' ') if caption else '')[:80]!r}")
    for script in article.find_all("script"):
        if EMPTY_PLOTLY.search(script.get_text()):
            problems.append("a plotly figure without data")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", prose)
                 if len(s.split()) >= 12]
    seen: set[str] = set()
    for sentence in sentences:
        if sentence in seen:
            problems.append(f"a sentence printed twice: {sentence[:80]!r}")
        seen.add(sentence)
    return problems


_CLEAN_PAGE = """<main><article class="bd-article">
<section id="abstract"><h2>Abstract</h2><p>This study runs on a simulated cohort: 300 healthy
controls, 40 AD and 40 PD patients.</p></section>
<p>Dataset: the simulated cohort, skull-stripped. True biological ages are known; the truth
holds for 3 of 4 estimates (not estimable for one).</p>
<pre>print({'HC': 300}, True, n/a, mean_gap)</pre>
<figure id="tab-1"><figcaption><span class="caption-number">Table 1 </span>Accuracy.
<table><thead><tr><th>model</th><th>MAE (years)</th><th>Hoehn &amp; Yahr</th><th>machine</th>
</tr></thead><tbody><tr><td>RNC</td><td>7.10</td><td>—</td><td>x86_64</td></tr>
<tr><td><code>batch_size</code></td><td>16</td><td>—</td><td>—</td></tr></tbody></table>
</figcaption></figure>
<figure id="fig-1"><img src="a.png"/><figcaption>Figure 1 A figure.</figcaption></figure>
<figure id="fig-2"><div class="plotly-graph-div" id="p1"></div>
<script>Plotly.newPlot("p1", [{"x": [1], "y": [2]}], {})</script>
<figcaption>Figure 2 A plot.</figcaption></figure>
</article></main>"""


def test_presentation_findings_pass_a_clean_page():
    assert presentation_findings(_CLEAN_PAGE) == []


@pytest.mark.parametrize(("defect", "replace", "by"), [
    ("Python repr", "300 healthy\ncontrols", "{'HC': 300} healthy controls"),
    ("Python repr", "Dataset:", "Sites ['siteA', 'siteB']. Dataset:"),
    ("Python repr", "Dataset:", "Calibrating each model: {\u2018rnc\u2019: 60}. Dataset:"),
    ("a printed bool", "skull-stripped.", "skull-stripped: True)."),
    ("'n/a' in the text", "not estimable for one", "n/a for one"),
    ("identifier in a table header", "<th>Hoehn &amp; Yahr</th>", "<th>hoehn_yahr</th>"),
    ("identifier in a table header", "<th>model</th>", "<th>rnc</th>"),
    ("identifier in a table cell", "<td>—</td>", "<td>mean_gap</td>"),
    ("bold text in the abstract", "<p>This study", "<p><strong>Data.</strong> This study"),
    ("a figure with nothing but its caption", '<img src="a.png"/>', "<p>No TIV measured.</p>"),
    ("a plotly figure without data", '[{"x": [1], "y": [2]}]', "[]"),
    ("a sentence printed twice", "<pre>",
     "<p>No brain was extracted here, so there is no intracranial volume to report at all.</p>"
     "<p>No brain was extracted here, so there is no intracranial volume to report at all.</p>"
     "<pre>"),
])
def test_presentation_findings_catch_each_defect(defect, replace, by):
    assert replace in _CLEAN_PAGE
    found = presentation_findings(_CLEAN_PAGE.replace(replace, by, 1))
    assert any(f.startswith(defect) for f in found), found


def test_reader_findings_catch_each_defect(tmp_path):
    clean = {"text": "MAE 4.42 years (not estimable)", "mathErrors": 0, "wideTables": [],
             "uncaptionedTables": [], "uncaptionedFigures": []}
    assert reader_findings(clean, tmp_path) == []
    dirty = {"text": f"x $a_{{1}}$ at /tmp/run/simulation.json and {tmp_path}/b, rho nan, None"
                     " {glue:text}`n_retest` subjects",
             "mathErrors": 1, "pageOverflow": 40, "wideTables": ["tab-1: 900 px"], "uncaptionedTables": ["t"],
             "uncaptionedFigures": ["div"], "boldAbstract": ["300"]}
    found = " | ".join(reader_findings(dirty, tmp_path))
    for text in ("raw LaTeX '$'", "raw LaTeX '_{'", "MathJax errors", "wider than the column",
                 "table without", "figure without", "absolute path '/tmp/run/simulation.json'",
                 "the build's own folder", "missing value 'nan'", "missing value 'None'",
                 "scrolls sideways by 40 px", "raw MyST '{glue:text}'",
                 "bold text in the abstract: '300'"):
        assert text in found, text


@pytest.mark.browser
@pytest.mark.parametrize(("style", "bold"), [("", []), ("span.pasted-text {font-weight: bold}",
                                                         ["300"])])
def test_reader_checks_see_bold_that_css_makes(tmp_path, style, bold):
    """A glued number is a <span class="pasted-text">, bold only by myst-nb's CSS: the page
    check reads the computed weight, as a reader sees it (issue 32)."""
    reason = browser.skip_reason()
    if reason:
        pytest.skip(reason)
    page = tmp_path / "p.html"
    page.write_text(f"<html><head><style>{style}</style></head><body><main><article "
                    'class="bd-article"><section id="abstract"><h2>Abstract</h2><p>A cohort of '
                    '<span class="pasted-text">300</span> controls.</p></section></article>'
                    "</main></body></html>", encoding="utf-8")
    driver = browser.start()
    try:
        driver.get(page.as_uri())
        found = driver.execute_script(browser.READER_CHECKS)
    finally:
        driver.quit()
    assert found["boldAbstract"] == bold


#: The reader checks that hold on the appendix's user-guide pages too.
GUIDE_CHECKS = ("absolute path", "table wider", "raw LaTeX", "raw MyST", "MathJax", "the page scrolls",
                "the build's own folder", "an empty page")


@pytest.mark.slow
@pytest.mark.browser
def test_every_page_reads_as_a_paper_in_chromium(built, browsed):
    """Each page, as Chromium renders it offline, screenshotted whole: no raw LaTeX, no table
    wider than the content column, a numbered caption on every figure and table, no absolute
    path and no nan/NaN/None in the text; and none of :func:`presentation_findings` (Python
    reprs and booleans in the prose, identifiers in table headers, a bold abstract, an empty
    figure, a sentence printed twice). Screenshots: tests/_artifacts/pages/."""
    root, _ = built
    _, html, seen = browsed
    shots = ARTIFACTS / "pages"
    problems: dict[str, list[str]] = {}
    nav: set[str] = set()
    for name, info in seen.items():
        if name == "index.html":
            continue
        found = info["found"]
        problems[name] = reader_findings(found, root)
        if name.startswith("guide/"):
            # the appendix is the user guide (docs/): code, "n/a", True and uncaptioned
            # tables belong there; what any reader needs still holds (no machine path, no
            # table past the column, no raw LaTeX)
            problems[name] = [p for p in problems[name] if p.startswith(GUIDE_CHECKS)]
        else:
            problems[name] += presentation_findings(info["source"])  # issue 32
        if len(found["text"].split()) < 100:
            problems[name].append(f"an empty page: {len(found['text'].split())} words")
        nav |= set(info["nav"])
    (ARTIFACTS / "reader_findings.json").write_text(json.dumps(problems, indent=2))
    assert len(problems) >= 10
    # every page the navigation offers is one of the checked (non-empty) pages; no empty index
    visited = {(html / name).resolve().as_uri() for name in problems}
    assert nav and nav <= visited, sorted(nav - visited)
    assert not (html / "genindex.html").exists()
    assert all((shots / (n.replace("/", "__") + ".png")).stat().st_size > 10_000 for n in problems)
    bad = {name: found for name, found in problems.items() if found}
    assert not bad, json.dumps(bad, indent=2)
