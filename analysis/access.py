"""Who may open the dashboard: on 127.0.0.1 (the default) only this machine can; any other address needs an
access token, which the server gets through $ENTROPYSCOPE_TOKEN and every browser session presents once.

Kept here, torch- and Streamlit-free, so the CLI refuses a bad start in a blink and the app checks the same.
"""

import hashlib
import hmac
import ipaddress
import os
import re

from analysis.errors import UsageError

TOKEN_ENV = "ENTROPYSCOPE_TOKEN"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_LEN = 12
PASS_COOKIE = "entropyscope_pass"  # lets reloads and new tabs of a browser that presented the token back in
PASS_MAX_AGE_S = 7 * 24 * 3600
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")  # URL-safe, so `?token=...` needs no escaping
HOW = "e.g. --token \"$(python -c 'import secrets; print(secrets.token_urlsafe())')\""


def server_token(host: str, token: str | None) -> str | None:
    """The token the dashboard on `host` will require (--token, else $ENTROPYSCOPE_TOKEN), None for none;
    UsageError for an address other than 127.0.0.1 without one, or a token too short or not URL-safe."""
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if token is None:
        if host in LOCAL_HOSTS:
            return None
        raise UsageError(
            f"--host {host} {_reach(host)}: pass --token TOKEN or set {TOKEN_ENV} ({HOW}); browsers then open "
            "it with ?token=TOKEN"
        )
    if len(token) < MIN_TOKEN_LEN or not _TOKEN.fullmatch(token):
        raise UsageError(
            f"the access token must be at least {MIN_TOKEN_LEN} characters of A-Z a-z 0-9 . _ ~ - ({HOW})"
        )
    return token


def _reach(host: str) -> str:
    """What serving on `host` means, for the refusal: another loopback address is still this machine."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = False
    if loopback:
        return "is a non-default address (only 127.0.0.1 serves without a token)"
    return "opens the dashboard beyond this machine"


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so response times tell nothing about how much of a guess was right."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def session_pass(token: str) -> str:
    """The cookie value that proves a browser presented `token`: derived from it, so the cookie never holds
    the token itself, and a server restarted with another token turns every old pass away."""
    return hmac.new(token.encode(), b"entropyscope dashboard pass", hashlib.sha256).hexdigest()
