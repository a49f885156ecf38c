"""A grouped Compare in real Chromium from a deep link: each group of seeds drawn as a mean curve with a shaded
95% CI band, the legend naming the group and its n, and the final-value table under the chart."""

from collections.abc import Iterator

import pytest
from test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    EXCEPTION,
    IDLE,
    PANEL_JS,
    TIMEOUT_MS,
    open_page,
    screenshot,
    serving,
)
from test_compare_page import RUNS, write_sweep

from analysis.schema import ENTROPY_MEAN

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.browser

# The fills the browser drew in the panel, and its legend entries.
DRAWN_JS = f"""() => {{
  const el = ({PANEL_JS})('compare:{ENTROPY_MEAN}');
  if (!el) return null;
  return {{fills: el.querySelectorAll('path.js-fill').length,
          legend: [...el.querySelectorAll('g.legend text.legendtext')].map(t => t.textContent)}};
}}"""


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("browser_groups") / "store"
    write_sweep(store)
    with serving(store) as u:
        yield u


def test_grouped_compare_renders_bands_from_a_deep_link(url: str) -> None:
    link = url + "/compare?" + "&".join(f"runs={r}" for r in RUNS) + "&group=auto"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            first = (
                browser.new_page()
            )  # as test_browser.browser: a first session's deep link gets a stray dialog
            first.goto(url + "/")
            first.locator(IDLE).wait_for(timeout=TIMEOUT_MS)
            first.close()
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            open_page(page, link, f"() => {{ const d = ({DRAWN_JS})(); return d && d.fills >= 2; }}")
            drawn = page.evaluate(DRAWN_JS)
            assert sorted(drawn["legend"]) == ["controller=none (n=4)", "controller=repo_r (n=4)"]
            assert page.locator('[data-testid="stDataFrame"]').count() == 2  # final values, pairwise verdicts
            assert page.locator(EXCEPTION).count() == 0
            screenshot(page, "compare_grouped", 1500)
        finally:
            browser.close()
