"""Hostile input in real Chromium (issue 17), on a dashboard served on a second loopback address with an
access token, as `entropyscope dashboard --host ADDRESS --token TOKEN` serves it beyond 127.0.0.1:

- without the token a browser gets the token form on every address: no run id, value or text reaches it
  (checked in every WebSocket frame the server sends), and no control file gets written;
- with it, HTML, script and markdown links in run ids, config values, sample and token texts and alert
  messages show as text on every page and never run (no dialog, a window flag the payloads set stays unset).
"""

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, IDLE, TIMEOUT_MS, serving, sync_api
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from analysis.access import PASS_COOKIE, TOKEN_ENV
from analysis.store_writer import RunWriter

pytestmark = pytest.mark.browser

HOST = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to the loopback interface
TOKEN = "browser-test-token-1234"
# Each payload sets window.__xss (and opens a dialog) if it ever becomes markup or a followed link.
PAYLOADS = [
    "<script>window.__xss=1;alert(1)</script>",
    '<img src=x onerror="window.__xss=2;alert(2)">',
    "[click me](javascript:window.__xss=3)",
    "<svg onload=window.__xss=4>",
    '<iframe srcdoc="<script>parent.__xss=5</script>"></iframe>',
]
XSS_RUN = "xss <img src=x onerror=window.__xss=6> [m](javascript:window.__xss=7)"
PLAIN_RUN = "plain-run-secret-name"
CONFIG_VALUE = "<img src=x onerror=window.__xss=8>"
ALERT_MESSAGE = "collapse <script>window.__xss=9</script> [docs](javascript:window.__xss=10)"
STATE_JS = """() => ({
  xss: window.__xss === undefined ? null : window.__xss,
  jsLinks: document.querySelectorAll('a[href^="javascript:" i]').length,
  scripts: [...document.querySelectorAll('script')].filter(s => s.textContent.includes('__xss')).length,
})"""


def write_store(store: Path) -> None:
    vocab = {"[UNK]": 0, **{text: i + 1 for i, text in enumerate(PAYLOADS)}}
    with RunWriter(store, XSS_RUN, {"algo": CONFIG_VALUE, "controller": "none", "model": PAYLOADS[0]}) as w:
        for step in range(1, 4):
            w.log_scalars(step, {"entropy/mean": 1.0 - 0.2 * step, "reward/mean": 0.1 * step})
        w.log_samples([
            {"step": 3, "sample_id": i, "group_id": 0, "prompt_token_ids": [0], "response_token_ids": [i + 1],
             "prompt_text": text, "response_text": text, "reward": 1.0, "correct": True}
            for i, text in enumerate(PAYLOADS)
        ])  # fmt: skip
        n = len(PAYLOADS)
        w.log_tokens({
            "step": [3] * n, "sample_id": list(range(n)), "position": [0] * n, "token_id": list(range(1, n + 1)),
            "logp": [-0.5] * n, "entropy": [1.0] * n, "advantage": [0.5] * n, "ratio": [1.0] * n,
            "clip_side": [0] * n, "quadrant": [1] * n,
        })  # fmt: skip
        w.log_event(3, "alert_fired", ALERT_MESSAGE, severity="critical", payload={"rule": PAYLOADS[1]})
    checkpoint = store / XSS_RUN / "checkpoints" / "step_3"
    checkpoint.mkdir(parents=True)
    Tokenizer(WordLevel(vocab, unk_token="[UNK]")).save(str(checkpoint / "tokenizer.json"))
    with RunWriter(store, PLAIN_RUN, {"algo": "grpo", "controller": "repo_r"}) as w:
        w.log_scalars(1, {"entropy/mean": 0.9})
    info = (store / PLAIN_RUN / "run.json").read_text()  # looks alive, so the Control page would write to it
    (store / PLAIN_RUN / "run.json").write_text(info.replace('"finished"', '"running"'))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("hostile") / "store"
    write_store(store)
    return store


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[str]:
    with serving(store, HOST, {**os.environ, TOKEN_ENV: TOKEN}) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[object]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser: object) -> Iterator[object]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1200})
    yield ctx
    ctx.close()


def watched_page(context: object) -> tuple[object, list[bytes], list[str]]:
    """A new page, the WebSocket frames the server sends it, and the dialogs that opened (dismissed)."""
    page = context.new_page()
    frames: list[bytes] = []
    dialogs: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda f: frames.append(f if isinstance(f, bytes) else f.encode())),
    )
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    return page, frames, dialogs


def settle(page: object) -> None:
    page.locator(IDLE).wait_for(timeout=TIMEOUT_MS)


# ---- without the token ----------------------------------------------------------------------------------


LOCKED_PATHS = ["/", f"/run?run={quote(PLAIN_RUN)}", f"/tokens?run={quote(XSS_RUN)}", "/compare",
                f"/control?run={quote(PLAIN_RUN)}", "/alerts", "/?token=wrong-token-000000"]  # fmt: skip


def test_without_the_token_a_browser_reads_nothing_and_writes_nothing(
    context: object, server: str, store: Path
) -> None:
    page, frames, _ = watched_page(context)
    for path in LOCKED_PATHS:
        page.goto(server + path)
        page.get_by_text("This dashboard needs its access token").wait_for(timeout=TIMEOUT_MS)
        settle(page)
        text = page.inner_text("body")
        assert PLAIN_RUN not in text and "xss" not in text and str(store) not in text, path
        assert page.locator('[data-testid="stDataFrame"], .js-plotly-plot').count() == 0, path
    page.get_by_label("Access token").fill("wrong-token-000000")
    page.get_by_role("button", name="Open").click()
    page.get_by_text("Wrong token.").wait_for(timeout=TIMEOUT_MS)
    received = b"".join(frames)
    assert frames and PLAIN_RUN.encode() not in received and b"xss" not in received
    assert str(store).encode() not in received and b"entropy/mean" not in received
    assert not (store / PLAIN_RUN / "control.json").exists()
    # Streamlit's XSRF protection is on: it hands the browser its cookie.
    assert any(c["name"] == "_streamlit_xsrf" for c in context.cookies())


def test_the_token_lets_this_browser_in_its_reloads_and_new_tabs(context: object, server: str) -> None:
    page, _, _ = watched_page(context)
    page.goto(server + "/?token=" + TOKEN)
    page.wait_for_function(
        "() => !!document.querySelector('[data-testid=\"stDataFrame\"]')", timeout=TIMEOUT_MS
    )
    settle(page)
    assert "token=" not in page.url  # taken out of the address bar and the history
    page.get_by_role("link", name="Control").click()  # same session: no token needed again
    page.get_by_text("Run (running runs first)").wait_for(timeout=TIMEOUT_MS)
    (cookie,) = [c for c in context.cookies() if c["name"] == PASS_COOKIE]
    assert TOKEN not in cookie["value"]  # a pass derived from the token, not the token
    page.reload()  # a new session of the same browser
    page.get_by_text("Run (running runs first)").wait_for(timeout=TIMEOUT_MS)
    tab = context.new_page()
    tab.goto(server + "/alerts")
    tab.get_by_role("heading", name="Alerts").wait_for(timeout=TIMEOUT_MS)


def test_the_form_states_the_token_length_and_lets_in(browser: object, server: str) -> None:
    fresh = browser.new_context()  # no pass cookie
    try:
        page = fresh.new_page()
        page.goto(server + "/alerts?token=wrong-token-000000")
        page.get_by_text("Wrong token in the address").wait_for(timeout=TIMEOUT_MS)
        assert "at least 12 characters" in page.inner_text("body")  # said before anyone tries a short one
        page.get_by_label("Access token").fill("short")
        page.get_by_role("button", name="Open").click()
        page.get_by_text("it has 5 characters").wait_for(timeout=TIMEOUT_MS)
        page.get_by_label("Access token").fill(TOKEN)
        page.get_by_role("button", name="Open").click()
        page.get_by_role("heading", name="Alerts").wait_for(timeout=TIMEOUT_MS)
    finally:
        fresh.close()


# ---- hostile text with the token ------------------------------------------------------------------------


def open_with_token(context: object, server: str, path: str) -> tuple[object, list[str]]:
    page, _, dialogs = watched_page(context)
    sep = "&" if "?" in path else "?"
    page.goto(f"{server}{path}{sep}token={TOKEN}")
    settle(page)
    return page, dialogs


def picked_run(page: object) -> str:
    """The Run selectbox's shown value (it sits in the box's text or its input, by Streamlit version)."""
    return page.locator('[data-testid="stSelectbox"]').first.evaluate(
        "e => e.textContent + ' ' + [...e.querySelectorAll('input')].map(i => i.value).join(' ')"
    )


def assert_inert(page: object, dialogs: list[str], where: str) -> None:
    # An injected <img onerror> would fire once its load fails: wait until every image has loaded or failed.
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=TIMEOUT_MS)
    state = page.evaluate(STATE_JS)
    assert state == {"xss": None, "jsLinks": 0, "scripts": 0}, (where, state)
    assert dialogs == [], (where, dialogs)
    assert page.locator('[data-testid="stException"]').count() == 0, where


def test_token_inspector_shows_html_in_samples_and_tokens_as_text(context: object, server: str) -> None:
    page, dialogs = open_with_token(context, server, f"/tokens?run={quote(XSS_RUN)}")
    page.locator("table.entropyscope-tokens").wait_for(timeout=TIMEOUT_MS)
    table = page.inner_text("table.entropyscope-tokens")
    for text in PAYLOADS:
        assert table.count(text) >= 2, text  # the prompt and the response token, each as written
    assert XSS_RUN in picked_run(page)
    assert_inert(page, dialogs, "token inspector")


def test_run_detail_shows_html_run_id_and_config_as_text(context: object, server: str) -> None:
    page, dialogs = open_with_token(context, server, f"/run?run={quote(XSS_RUN)}")
    assert XSS_RUN in picked_run(page)
    page.get_by_text("config and versions").click()
    page.get_by_text(CONFIG_VALUE).first.wait_for(timeout=TIMEOUT_MS)
    assert_inert(page, dialogs, "run detail")


GRID_TEXT_JS = (
    "() => [...document.querySelectorAll('[data-testid=stDataFrame] table')].map(t => t.textContent).join()"
)
TABLE_PAGES = {"/": [XSS_RUN, CONFIG_VALUE], "/alerts": [XSS_RUN, PAYLOADS[1]]}  # path: texts in its table


@pytest.mark.parametrize("path", [*TABLE_PAGES, f"/compare?runs={quote(XSS_RUN)}&runs={PLAIN_RUN}"])
def test_runs_alerts_and_compare_show_html_as_text(context: object, server: str, path: str) -> None:
    page, dialogs = open_with_token(context, server, path)
    for text in TABLE_PAGES.get(path, []):  # the data grid's cells, as its accessible table holds them
        page.wait_for_function(f"() => ({GRID_TEXT_JS})().includes({text!r})", timeout=TIMEOUT_MS)
    assert_inert(page, dialogs, path)
