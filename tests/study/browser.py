"""Headless Chromium with the network off, for the offline-book tests.

Debian's chromium and chromedriver are used (installed by ``.ci/run`` / ``nox -s tests`` where
possible). Every request that leaves the machine fails: a dead proxy takes all http(s) traffic
and host names resolve to nothing. The performance log records every request a page made, so a
test can assert that none went to the network at all.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1800",
    # network off: all proxied traffic goes to a closed port, and no host name resolves
    "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
)


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        return ("Debian chromium/chromedriver not installed (apt-get install chromium "
                "chromium-driver; nox -s tests does it when run as root)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e .[test])"
    return None


def start() -> Any:
    """A headless Chromium driven by selenium, network off, logs on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(driver: Any, script: str, timeout: float = 20.0) -> Any:
    """Poll a JavaScript expression until it is truthy; return its last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.25)
    return value


def visit(driver: Any, page: Path) -> dict[str, Any]:
    """Open a built page and return its console errors and the URLs it requested."""
    driver.get(page.resolve().as_uri())
    wait_for(driver, "document.readyState === 'complete'")
    time.sleep(0.5)  # let deferred scripts (MathJax, plotly) start
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return {"errors": errors, "requests": requests}


def screenshot_full_page(driver: Any, path: Path, max_height: int = 16000) -> Path:
    """Save a PNG of the whole page (up to ``max_height`` CSS pixels), not only the viewport.

    The viewport is stretched to the page's height for the shot (the width stays that of the
    window, so the layout is the one a reader sees), then restored.
    """
    import base64

    width = int(driver.execute_script("return window.innerWidth"))
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    height = max(1, min(height, max_height))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        time.sleep(0.5)  # let plotly and the theme settle at the new size
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


#: JavaScript run on each page: what a reader of the content column sees, as findings.
READER_CHECKS = r"""
const article = document.querySelector('.bd-article') || document.querySelector('main');
const found = {latex: [], mathErrors: 0, pageOverflow: 0, wideTables: [], uncaptionedTables: [],
               uncaptionedFigures: [], boldAbstract: [], text: ''};
if (!article) { return found; }
// bold as the reader sees it (CSS included: myst-nb sets pasted numbers bold)
const abstract = article.querySelector('#abstract');
if (abstract) {
  abstract.querySelectorAll('p, p *').forEach(e => {
    const own = [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    if (own && parseInt(getComputedStyle(e).fontWeight, 10) >= 600) { found.boldAbstract.push(own.slice(0, 40)); }
  });
}
const clone = article.cloneNode(true);
clone.querySelectorAll('mjx-container, script, style, pre, .cell_input, .js-plotly-plot, '
                       + 'iframe, .headerlink').forEach(e => e.remove());
found.text = clone.textContent;
found.mathErrors = article.querySelectorAll('mjx-merror').length;
const column = article.getBoundingClientRect();
const container = article.closest('.bd-article-container') || article;
found.pageOverflow = Math.max(document.documentElement.scrollWidth - document.documentElement.clientWidth,
                              container.scrollWidth - container.clientWidth);
const captionOf = (el, word) => {
  // a numbered caption: of the figure around it (figures, pasted tables) or its own <caption>
  const own = el.tagName === 'TABLE' ? el.querySelector(':scope > caption .caption-number') : null;
  const figure = el.closest('figure');
  const number = own || (figure && figure.querySelector(':scope > figcaption .caption-number'));
  return !!number && number.textContent.trim().startsWith(word);
};
const label = el => (el.closest('[id]') || {}).id || el.tagName;
article.querySelectorAll('table').forEach(t => {
  const box = t.getBoundingClientRect();
  if (box.right > column.right + 1 || box.width > column.width + 1) {
    found.wideTables.push(`${label(t)}: ${Math.round(box.width)} px in a ${Math.round(column.width)} px column`);
  }
  if (!captionOf(t, 'Table')) { found.uncaptionedTables.push(label(t) + ': ' + t.textContent.trim().slice(0, 60)); }
});
article.querySelectorAll('.plotly-graph-div, .cell_output img, iframe').forEach(f => {
  if (!captionOf(f, 'Figure')) {
    const title = f.querySelector ? (f.querySelector('.gtitle') || {}).textContent : '';
    found.uncaptionedFigures.push(`${f.tagName.toLowerCase()} ${title || f.getAttribute('alt') || ''}`.trim());
  }
});
return found;
"""
