"""End-to-end dashboard tests in real Chromium (Debian's /usr/bin/chromium driven by Playwright).

One Streamlit server per module, over a copy of sample_runs/ (the live tests add a running trainer to
that copy, so they run last, and "Evaluate rules now" adds alert events to it). Every wait is a poll with
a deadline on a DOM condition, never a fixed sleep. Screenshots go to test-artifacts/screenshots/.
"""

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from analysis.store_reader import StoreReader
from app import serve

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need playwright (pip install playwright)"
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RUNS = ROOT / "sample_runs"
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
EXCEPTION = '[data-testid="stException"]'
# Points of the mean-entropy trace of the Run detail entropy panel (found by its layout.meta, not its title).
PANEL_JS = """(panel) => [...document.querySelectorAll('.js-plotly-plot')]
  .find(e => e.layout && e.layout.meta && e.layout.meta.panel === panel)"""
ENTROPY_POINTS_JS = f"""() => {{
  const el = ({PANEL_JS})('entropy');
  const t = el && (el._fullData || []).find(d => d.name === 'mean');
  return t ? t._length : 0;
}}"""
PAGES = {  # name: (path, JS condition for "its main chart or table is drawn", viewport height for the shot)
    "runs": ("/", "() => !!document.querySelector('[data-testid=\"stDataFrame\"] canvas')", 800),
    "compare": (
        "/compare?runs=grpo-fp32&runs=dapo-fp32&runs=grpo-bf16&metrics=entropy/mean&metrics=clip/frac_high&smooth=0.6",
        "() => document.querySelectorAll('.js-plotly-plot g.trace.scatter').length > 0",
        1500,
    ),
    "run_detail": ("/run?run=grpo-fp32", f"() => ({ENTROPY_POINTS_JS})() > 0", 2700),
    "token_inspector": (
        "/tokens?run=grpo-fp32&step=37",
        "() => !!document.querySelector('table.entropyscope-tokens')",
        1500,
    ),
    "control": ("/control?run=grpo-fp32", f"() => !!({PANEL_JS})('control')", 1100),
    "alerts": (
        "/alerts",
        "() => [...document.querySelectorAll('h1')].some(h => h.textContent === 'Alerts')",
        800,
    ),
}
TIMEOUT_MS = 90_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def damage(store: Path) -> None:
    """What crashes and bad disks leave behind; every page must still show everything else."""
    (store / "empty-run").mkdir()
    steps = store / "grpo-fp32" / "steps"
    segment = sorted(steps.glob("*.parquet"))[0]
    (steps / "00000099-1-deadbeef.parquet").write_bytes(segment.read_bytes()[:100])  # truncated
    (steps / ".00000098-1-cafecafe.parquet.1234abcd.tmp").write_bytes(b"PAR1 half")  # a killed write
    (store / "grpo-bf16" / "control.json").write_text("{not json")
    (store / "dapo-fp32" / "run.json").write_bytes(b"\x00garbage")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("browser") / "store"
    shutil.copytree(SAMPLE_RUNS, dest)
    damage(dest)
    return dest


@contextlib.contextmanager
def serving(store: Path, host: str = "127.0.0.1", env: dict[str, str] | None = None) -> Iterator[str]:
    """The dashboard over `store` in its own process, as `entropyscope dashboard` starts it; yields its URL."""
    port = free_port()
    log = open(store.parent / "server.log", "w")  # noqa: SIM115 - open for the server's whole life
    proc = serve.start(str(store), host=host, port=port, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://{host}:{port}"
    try:
        serve.wait_ready(url, timeout=120, proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[str]:
    with serving(store) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[object]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module", autouse=True)
def first_deep_link(browser: object, server: str) -> str:
    """The text of the fresh server's first page: a deep link, opened before any test's page (autouse)."""
    page = browser.new_page()
    path, ready_js, _ = PAGES["run_detail"]
    open_page(page, server + path, ready_js)
    text = page.inner_text("body")
    page.close()
    return text


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def open_page(page: object, url: str, ready_js: str, idle: bool = True) -> None:
    """Load `url`, wait until its main element is drawn and (`idle`) the script has finished, check no traceback.

    A live run's page reruns its fragment every 2 s; on a loaded machine a rerun can outlast that, so the script
    may never rest: pages of live runs pass idle=False."""
    page.goto(url)
    page.wait_for_function(ready_js, timeout=TIMEOUT_MS)
    if idle:
        page.locator(IDLE).wait_for(timeout=TIMEOUT_MS)
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()


def screenshot(page: object, name: str, height: int, idle: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": height})  # Streamlit scrolls inside the page
    page.mouse.move(900, 40)  # off every control, so no tooltip or hover state is in the picture
    if idle:
        page.locator(IDLE).wait_for(timeout=TIMEOUT_MS)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_without_exception(page: object, server: str, name: str) -> None:
    path, ready_js, height = PAGES[name]
    open_page(page, server + path, ready_js)
    screenshot(page, name, height)
    assert page.locator(EXCEPTION).count() == 0


def test_a_deep_link_on_a_fresh_server_opens_its_page_and_no_dialog(first_deep_link: str) -> None:
    assert "Run detail" in first_deep_link
    assert "Page not found" not in first_deep_link  # Streamlit's v1 pages/ scan, before app/views/


def test_select_two_runs_and_compare_shows_two_traces(page: object, server: str) -> None:
    open_page(page, server + "/", PAGES["runs"][1])
    grid = page.locator('[data-testid="stDataFrame"]').bounding_box()
    for row in (0, 1):  # the grid is a canvas: click the row-selection column of the first two rows
        page.mouse.click(grid["x"] + 15, grid["y"] + 35 * (row + 1) + 17)
        page.get_by_role("button", name=f"Compare selected ({row + 1})").wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Compare selected (2)").click()
    page.wait_for_url("**/compare?runs=*", timeout=TIMEOUT_MS)
    first_chart = page.locator(".js-plotly-plot").first
    first_chart.locator("g.trace.scatter").first.wait_for(timeout=TIMEOUT_MS)
    assert first_chart.locator("g.legend g.traces").count() == 2  # one entry per run (its raw line has none)
    assert page.url.count("runs=") == 2  # the selection is in the URL, so the link reproduces the view
    assert page.locator(EXCEPTION).count() == 0


def test_runs_table_shows_every_column_at_1600_px(browser: object, server: str) -> None:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = context.new_page()
        open_page(page, server + "/", PAGES["runs"][1])
        widths = page.evaluate(
            "() => [...document.querySelectorAll('[data-testid=\"stDataFrame\"] .dvn-scroller')]"
            ".map(e => [e.scrollWidth, e.clientWidth])"
        )
        assert widths and all(scroll <= client for scroll, client in widths), widths  # no column off-screen
    finally:
        context.close()


def test_compare_opens_on_the_newest_runs(page: object, server: str) -> None:
    """No runs in the URL: a first visit shows every sample run's entropy (there are fewer than eight)."""
    n_runs = len(StoreReader(SAMPLE_RUNS).runs())
    open_page(page, server + "/compare", PAGES["compare"][1])
    first_chart = page.locator(".js-plotly-plot").first
    first_chart.locator("g.trace.scatter").first.wait_for(timeout=TIMEOUT_MS)
    assert first_chart.locator("g.legend g.traces").count() == n_runs >= 2
    assert page.get_by_text("Choose runs above").count() == 0


def test_a_damaged_store_shows_everything_else(page: object, server: str) -> None:
    """A truncated segment, a temp file, garbage run.json and control.json, an empty run folder (damage())."""
    open_page(page, server + "/", PAGES["runs"][1])
    grid = page.locator('[data-testid="stDataFrame"]')
    runs = sorted(d.name for d in SAMPLE_RUNS.iterdir() if (d / "run.json").is_file())
    page.get_by_text(f"{len(runs)} of {len(runs)} runs").wait_for(timeout=TIMEOUT_MS)  # not the empty folder
    assert grid.count() == 1 and page.locator(EXCEPTION).count() == 0
    for run in ("grpo-fp32", "dapo-fp32", "grpo-bf16"):  # every damaged run keeps its charts
        open_page(page, f"{server}/run?run={run}", f"() => ({ENTROPY_POINTS_JS})() == 200")


def test_alerts_evaluate_rules_now_lists_the_collapse(page: object, server: str) -> None:
    open_page(page, server + "/alerts", PAGES["alerts"][1])
    page.get_by_role("button", name="Evaluate rules now").click()
    # Each sample run that ends below half its H0 has a critical collapse alert (the live run may add one).
    runs = StoreReader(SAMPLE_RUNS).runs()
    collapsed = int((runs["entropy_change"] < -0.5).sum())
    page.get_by_text("active critical").wait_for(timeout=TIMEOUT_MS)
    page.locator('[data-testid="stMetricValue"]').first.wait_for(timeout=TIMEOUT_MS)
    assert int(page.locator('[data-testid="stMetricValue"]').first.inner_text()) >= collapsed >= 1
    # The table of active alerts is drawn after the metrics; waiting for it is the assertion.
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=TIMEOUT_MS)
    assert page.locator(EXCEPTION).count() == 0
    screenshot(page, "alerts", 1100)


# ---- a live run: a real trainer process writing into the server's store ---------------------------------

LIVE_RUN = "live"


@pytest.fixture(scope="module")
def trainer(store: Path) -> Iterator[str]:
    """A small repo_r run that goes on until the module ends; yields its run id once it has logged steps."""
    log_path = store.parent / "trainer.log"
    cmd = [sys.executable, "-m", "trainer.cli", "train", "--store", str(store), "--run-id", LIVE_RUN,
           "--set", "steps=100000", "--set", "checkpoint_every=0", "--set", "controller=repo_r",
           "--set", "prompts_per_step=4", "--set", "group_size=4", "--set", "warmup_steps=40",
           "--set", "minibatches=2"]  # fmt: skip
    # ENTROPYSCOPE_CACHE (set by conftest.py) reaches the trainer through the environment: warm-up is cached.
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_steps(store / LIVE_RUN, proc, log_path)
            yield LIVE_RUN
        finally:
            proc.send_signal(signal.SIGINT)  # the CLI's clean stop: segments written so far are kept
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def wait_for_steps(run_dir: Path, trainer: subprocess.Popen, log: Path, timeout_s: float = 300.0) -> None:
    """Poll (deadline, not a fixed sleep) until the trainer has written a steps segment of its run."""
    deadline = time.monotonic() + timeout_s
    while not any((run_dir / "steps").glob("*.parquet")):
        if trainer.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"no steps from the live run (trainer exit {trainer.poll()}):\n{log.read_text()[-2000:]}"
            )
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_live_run_gains_points_while_the_page_stays_open(page: object, server: str, trainer: str) -> None:
    open_page(page, f"{server}/run?run={trainer}", PAGES["run_detail"][1], idle=False)
    before = page.evaluate(ENTROPY_POINTS_JS)
    # Same page, no reload: the fragment's own refresh must bring the new steps in.
    page.wait_for_function(f"() => ({ENTROPY_POINTS_JS})() > {before}", timeout=180_000)
    assert page.locator(EXCEPTION).count() == 0
    screenshot(page, "run_detail_live", 1400, idle=False)


@pytest.mark.timeout(600)
def test_control_apply_is_acknowledged_by_the_trainer(
    page: object, server: str, trainer: str, store: Path
) -> None:
    open_page(page, f"{server}/control?run={trainer}", f"() => !!({PANEL_JS})('control')", idle=False)
    page.get_by_role("textbox", name="target entropy (nats)", exact=True).fill("1.25")
    page.get_by_role("textbox", name="learning rate", exact=True).fill("0.0005")
    page.get_by_role("button", name="Apply").click()
    # The trainer reads control.json at its next step; the status fragment polls the events for the ack.
    status = page.locator('[data-testid="stAlertContentSuccess"]').filter(has_text="Version 1 acknowledged")
    status.wait_for(timeout=180_000)
    text = status.inner_text()
    assert "target_entropy default → 1.25" in text and "lr 0.001 → 0.0005" in text, text
    assert json.loads((store / trainer / "control.json").read_text())["settings"] == {
        "target_entropy": 1.25,
        "lr": 0.0005,
    }
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=TIMEOUT_MS)  # the control history
    assert page.locator(EXCEPTION).count() == 0
    screenshot(page, "control_live", 1100, idle=False)
