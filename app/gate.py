"""The dashboard's door: with an access token set ($ENTROPYSCOPE_TOKEN, required to serve beyond 127.0.0.1),
a browser session sees no page, so reads no run and writes no control file, until it presents the token:
`?token=...` in the address (then removed from it) or the form shown instead of every page. A browser that
presented it gets a pass cookie (derived from the token, not the token), so its reloads and new tabs stay in."""

import os

import streamlit as st

from analysis.access import MIN_TOKEN_LEN, PASS_COOKIE, PASS_MAX_AGE_S, TOKEN_ENV, session_pass, token_matches
from app import nav

_GRANTED = "_entropyscope_access_granted"
_WRONG_IN_URL = "_entropyscope_wrong_token_in_url"
_PASS_DUE = "_entropyscope_pass_due"


def granted() -> bool:
    """True when no token is set, or this browser has presented it (this session, or a pass cookie)."""
    expected = os.environ.get(TOKEN_ENV)
    if not expected:
        return True
    if not st.session_state.get(_GRANTED):
        if token_matches(session_pass(expected), st.context.cookies.get(PASS_COOKIE)):
            st.session_state[_GRANTED] = True
            return True
        given = st.query_params.get("token")
        if given is not None:
            del st.query_params["token"]  # out of the address bar, the history and screenshots
        st.session_state[_GRANTED] = st.session_state[_PASS_DUE] = token_matches(expected, given)
        st.session_state[_WRONG_IN_URL] = given is not None and not st.session_state[_GRANTED]
    if st.session_state.pop(_PASS_DUE, False):
        give_pass(expected)
    return st.session_state[_GRANTED]


def give_pass(token: str) -> None:
    """Set the pass cookie in the browser (Streamlit has no cookie setter; its context only reads them)."""
    cookie = f"{PASS_COOKIE}={session_pass(token)}; path=/; max-age={PASS_MAX_AGE_S}; SameSite=Strict"
    st.html(f"<script>document.cookie = {cookie!r};</script>", unsafe_allow_javascript=True)


def token_page() -> None:
    """Shown instead of every page until the session presents the token."""
    st.title("entropyscope")
    st.info("This dashboard needs its access token: open it with `?token=...` or enter the token here.")
    if st.session_state.get(_WRONG_IN_URL):
        st.error("Wrong token in the address (`?token=...`): enter the right one here.")
    with st.form("access"):
        given = st.text_input("Access token", type="password")
        st.caption(f"The token is the one the server was started with: at least {MIN_TOKEN_LEN} characters.")
        if st.form_submit_button("Open"):
            expected = os.environ.get(TOKEN_ENV) or ""
            if token_matches(expected, given):
                st.session_state[_GRANTED] = st.session_state[_PASS_DUE] = True
                st.session_state[_WRONG_IN_URL] = False
                st.rerun()
            short = f" (it has {len(given)} characters; tokens have at least {MIN_TOKEN_LEN})"
            st.error("Wrong token." + (short if len(given) < MIN_TOKEN_LEN else ""))


def locked_pages() -> list:
    """The token form at every page's address, so a deep link opens the form (not "page not found")."""
    return [
        st.Page(token_page, title="entropyscope", default=True)
        if p.default
        else st.Page(token_page, title="entropyscope", url_path=p.url_path)
        for p in nav.PAGES
    ]
