"""Start the dashboard as a `streamlit run` process: `start`/`wait_ready` for tests and benchmarks, and
`python -m app.serve --store DIR [--host H] [--port N]`, which becomes the server (exec), for the
`entropyscope dashboard` and `demo` commands: the trainer's CLI starts it as a process and never imports app/.
Any address but 127.0.0.1 needs an access token in $ENTROPYSCOPE_TOKEN (analysis/access.py).

Free of a module-level Streamlit import, so starting it costs nothing before the server itself starts.
"""

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from analysis.access import server_token
from analysis.errors import UsageError

MAIN = Path(__file__).with_name("main.py")
HEALTH_PATH = "/_stcore/health"


def command(store: str, host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The `streamlit run` command line (through app.launch) for a store, made absolute."""
    return [
        sys.executable, "-m", "app.launch", str(MAIN),
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        # A served dashboard never edits its own source: watching the files only costs CPU.
        "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
        "--server.enableXsrfProtection", "true",  # Streamlit's default, held here so no config file turns it off
        "--", "--store", os.path.abspath(store),
    ]  # fmt: skip


def start(store: str, host: str = "127.0.0.1", port: int = 8501, **popen: Any) -> subprocess.Popen:
    """Start the server in the background; pair with wait_ready() and terminate() the result when done."""
    return subprocess.Popen(command(store, host, port), **popen)


def wait_ready(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll the server's health endpoint until it answers "ok"; TimeoutError after `timeout` seconds,
    RuntimeError at once if `proc` (the server) has exited."""
    deadline = time.monotonic() + timeout
    health = url.rstrip("/") + HEALTH_PATH
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dashboard server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(health, timeout=2) as resp:
                if resp.status == 200 and resp.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, OSError) as err:
            last = err
        time.sleep(0.2)
    raise TimeoutError(f"dashboard at {url} not ready after {timeout:.0f} s (last error: {last})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.serve", description="serve the entropyscope dashboard"
    )
    parser.add_argument("--store", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    args = parser.parse_args(argv)
    try:  # the token itself travels in the environment ($ENTROPYSCOPE_TOKEN), never on a command line
        server_token(args.host, None)
    except UsageError as err:
        parser.exit(2, f"entropyscope: error: {err}\n")
    cmd = command(args.store, args.host, args.port)
    # Become the server: whoever started this process can stop the server by stopping this pid.
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
