"""The Sweeps page in real Chromium from a deep link (`/sweeps?sweep=ID`) at 1600 px: each metric against each
swept key with one dot per run and each setting's IQM with its 95% CI bar, and the parallel-coordinates view."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    EXCEPTION,
    IDLE,
    PAGES,
    PANEL_JS,
    SHOTS,
    TIMEOUT_MS,
    open_page,
    serving,
)
from test_sweeps_page import REWARD, SEEDS, SWEEP, write_grid

from analysis.schema import REWARD_MEAN
from analysis.store_writer import RunWriter

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.browser

PANEL = f"sweep:{REWARD_MEAN}:target_entropy"
# What the browser drew in the panel: run dots, error bars, legend entries.
DRAWN_JS = f"""() => {{
  const el = ({PANEL_JS})('{PANEL}');
  if (!el) return null;
  return {{points: el.querySelectorAll('g.points path.point').length,
          bars: el.querySelectorAll('g.errorbar').length,
          legend: [...el.querySelectorAll('g.legend text.legendtext')].map(t => t.textContent),
          ytitle: (el.querySelector('g.g-ytitle text') || {{}}).textContent}};
}}"""
PARCOORDS_JS = f"() => {{ const el = ({PANEL_JS})('sweep:parcoords'); return el ? el.querySelectorAll('g.y-axis').length : 0; }}"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("browser_sweeps") / "store"
    write_grid(store)
    for seed in (0, 1):  # a newer sweep: the one a page opens on without ?sweep=
        sweep = {"id": "newer", "params": {"lr": 0.1}, "seed": seed}
        with RunWriter(store, f"newer-s{seed}", {"lr": 0.1, "seed": seed}, meta={"sweep": sweep}) as w:
            w.log_scalars(1, {REWARD_MEAN: 0.5})
    with serving(store) as u:
        yield u


def test_sweeps_page_renders_dots_and_ci_bars_from_a_deep_link(url: str) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            unknown = "() => [...document.querySelectorAll('[data-testid=\"stAlert\"]')].some(a => a.innerText.includes('names no sweep'))"
            open_page(page, f"{url}/sweeps?sweep=nope", unknown)
            open_page(
                page,
                f"{url}/sweeps?sweep={SWEEP}",
                f"() => {{ const d = ({DRAWN_JS})(); return d && d.bars >= 4; }}",
            )
            drawn = page.evaluate(DRAWN_JS)
            n_runs = len(REWARD) * len(SEEDS)
            assert drawn["points"] == n_runs + len(REWARD)  # a dot per run, an IQM mark per setting
            assert drawn["bars"] == len(REWARD)
            assert sorted(drawn["legend"]) == sorted(
                f"controller={c}, target_entropy={t} (n=4)" for c, t in REWARD
            )
            assert drawn["ytitle"] == "reward/mean (reward)"
            page.wait_for_function(f"() => ({PARCOORDS_JS})() >= 5", timeout=TIMEOUT_MS)  # 2 keys, 3 metrics
            assert "Page not found" not in page.inner_text("body")
            assert page.locator(EXCEPTION).count() == 0
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.set_viewport_size({"width": 1600, "height": 2300})  # Streamlit scrolls inside the page
            page.mouse.move(900, 40)
            page.locator(IDLE).wait_for(timeout=TIMEOUT_MS)
            page.screenshot(path=str(SHOTS / "sweeps.png"))
        finally:
            browser.close()


def test_runs_table_grouped_by_group_fits_1600_px_with_a_live_run(tmp_path: Path) -> None:
    """Grouped, the group's column takes the source column's room: still no column off-screen when the
    heartbeat column shows too (a run left running by this process)."""
    store = tmp_path / "store"
    write_grid(store, unfinished=1)
    with serving(store) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            open_page(page, f"{url}/?by=group", PAGES["runs"][1], idle=False)
            widths = page.evaluate(
                "() => [...document.querySelectorAll('[data-testid=\"stDataFrame\"] .dvn-scroller')]"
                ".map(e => [e.scrollWidth, e.clientWidth])"
            )
            assert widths and all(scroll <= client for scroll, client in widths), widths
        finally:
            browser.close()


def test_sweeps_page_is_live_while_the_sweep_runs(tmp_path: Path) -> None:
    """A run of the sweep finishes while the page is open: its setting's n goes from 3 to 4 without a reload."""
    store, writers = tmp_path / "store", []
    write_grid(store, unfinished=1, left_open=writers)
    legend = f"""() => {{ const el = ({PANEL_JS})('{PANEL}');
      return el ? [...el.querySelectorAll('g.legend text.legendtext')].map(t => t.textContent).join('|') : ''; }}"""
    with serving(store) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            open_page(
                page, f"{url}/sweeps?sweep={SWEEP}", f"() => ({legend})().includes('(n=3)')", idle=False
            )
            assert "15 finished · 1 running" in page.inner_text("body")
            writers[0].close()  # the run finishes
            page.wait_for_function(f"() => !({legend})().includes('(n=3)')", timeout=TIMEOUT_MS)
            assert sorted(page.evaluate(legend).split("|")) == sorted(
                f"controller={c}, target_entropy={t} (n=4)" for c, t in REWARD
            )
            page.get_by_text("16 finished · 0 running").wait_for(timeout=TIMEOUT_MS)
        finally:
            browser.close()


def test_runs_page_sweep_button_opens_the_selected_runs_sweep(url: str) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            open_page(page, f"{url}/?in_sweep={SWEEP}", PAGES["runs"][1])
            grid = page.locator('[data-testid="stDataFrame"]').bounding_box()
            page.mouse.click(grid["x"] + 15, grid["y"] + 35 + 17)  # the first row's selection box (a canvas)
            page.get_by_role("button", name="Sweep", exact=True).click()
            page.wait_for_url("**/sweeps*", timeout=TIMEOUT_MS)
            page.wait_for_function(
                f"() => {{ const d = ({DRAWN_JS})(); return d && d.bars >= 4; }}", timeout=TIMEOUT_MS
            )
            assert f"Sweep '{SWEEP}'" in page.inner_text("body")  # the selected run's sweep, not the newest
            assert page.locator(EXCEPTION).count() == 0
        finally:
            browser.close()
