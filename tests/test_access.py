"""Dashboard access (issue 17): 127.0.0.1 by default, any other address only with an access token, which
every session presents before any page runs; Streamlit's XSRF protection stays on. The browser side (a
second loopback address in Chromium) is in test_browser_hostile.py."""

import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.access import TOKEN_ENV, server_token
from analysis.errors import UsageError
from app import serve
from app.store import STORE_ENV
from trainer import cli

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "a-long-enough-token-42"


@pytest.fixture(autouse=True)
def no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def test_only_127_0_0_1_serves_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    assert server_token("127.0.0.1", None) is None
    for host in ("0.0.0.0", "127.0.0.2", "192.0.2.1", "::"):
        reach = (
            "is a non-default address" if host == "127.0.0.2" else "opens the dashboard beyond this machine"
        )
        with pytest.raises(UsageError, match=f"--host {host} {reach}"):
            server_token(host, None)
        assert server_token(host, TOKEN) == TOKEN
    for bad in ("short", "has space in it!", "x" * 11, "ünïcode-token-long"):
        with pytest.raises(UsageError, match="at least 12 characters"):
            server_token("0.0.0.0", bad)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert server_token("0.0.0.0", None) == TOKEN
    assert server_token("127.0.0.1", None) == TOKEN  # a token set applies on loopback too


@pytest.mark.parametrize("command", ["dashboard", "demo"])
def test_cli_refuses_another_address_without_a_token(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    started = []
    monkeypatch.setattr(cli.subprocess, "Popen", lambda *a, **k: started.append(a))
    rc = cli.main([command, "--host", "0.0.0.0", "--store", str(ROOT / "sample_runs")])
    err = capsys.readouterr().err
    assert rc == 2 and started == []
    assert err.count("\n") == 1 and "--host 0.0.0.0 opens the dashboard beyond this machine" in err
    assert "--token" in err and TOKEN_ENV in err


def test_the_token_reaches_the_server_in_its_environment_not_its_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    monkeypatch.setattr(cli.subprocess, "Popen", lambda cmd, **kw: calls.append((cmd, kw)))
    monkeypatch.setattr(cli, "check_port", lambda host, port: None)
    cli.start_dashboard("runs", "0.0.0.0", 8501, TOKEN)
    cmd, kw = calls[-1]
    assert TOKEN not in " ".join(cmd) and kw["env"][TOKEN_ENV] == TOKEN
    monkeypatch.setenv(TOKEN_ENV, "left-over-token-0000")
    cli.start_dashboard("runs", "127.0.0.1", 8501, None)
    assert TOKEN_ENV not in calls[-1][1]["env"]


def test_serve_refuses_too_and_keeps_xsrf_protection_on() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.serve", "--store", str(ROOT / "sample_runs"), "--host", "0.0.0.0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "entropyscope: error: --host 0.0.0.0" in done.stderr
    cmd = serve.command("runs", "0.0.0.0")
    assert cmd[cmd.index("--server.enableXsrfProtection") + 1] == "true"


def run_app(monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    """The app's entry as a new session opens it (AppTest's switch_page before a first run would run a page
    file directly, past main.py; a real server always runs main.py, and the deep links are in the browser test)."""
    monkeypatch.setenv(STORE_ENV, str(ROOT / "sample_runs"))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def test_without_the_token_no_page_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    for params in ({}, {"token": "wrong-token-0000000"}, {"token": TOKEN[:-1]}, {"token": TOKEN + "x"}):
        at = run_app(monkeypatch, run="grpo-fp32", **params)
        assert not at.exception
        assert [t.label for t in at.text_input] == ["Access token"]
        assert not at.dataframe and not at.selectbox and not at.get("plotly_chart")
        assert "grpo-fp32" not in repr(at.main) and "sample_runs" not in repr(at.sidebar)
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page("views/control.py")  # no page is registered but the form


def test_the_token_opens_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(monkeypatch, token=TOKEN)
    assert not at.exception and at.title[0].value == "Runs" and "token" not in at.query_params
    at.switch_page("views/control.py").run()  # the session remembers it: other pages need no token
    assert at.title[0].value == "Control"
    at = run_app(monkeypatch)
    at.text_input[0].input(TOKEN)
    at.button[0].click().run()
    assert at.title[0].value == "Runs"
