"""The dashboard's door: with an access token set ($ENTROPYSCOPE_TOKEN, required to serve beyond 127.0.0.1),
a browser session sees no page, so reads no run and writes no control file, until it presents the token:
`?token=...` in the address (then removed from it) or the form shown instead of every page."""

import os

import streamlit as st

from analysis.access import TOKEN_ENV, token_matches
from app import nav

_GRANTED = "_entropyscope_access_granted"


def granted() -> bool:
    """True when no token is set, or this session has presented it (now or before)."""
    expected = os.environ.get(TOKEN_ENV)
    if not expected or st.session_state.get(_GRANTED):
        return True
    given = st.query_params.get("token")
    if given is not None:
        del st.query_params["token"]  # out of the address bar, the history and screenshots
    st.session_state[_GRANTED] = token_matches(expected, given)
    return st.session_state[_GRANTED]


def token_page() -> None:
    """Shown instead of every page until the session presents the token."""
    st.title("entropyscope")
    st.info("This dashboard needs its access token: open it with `?token=...` or enter the token here.")
    with st.form("access"):
        given = st.text_input("Access token", type="password")
        if st.form_submit_button("Open"):
            if token_matches(os.environ.get(TOKEN_ENV) or "", given):
                st.session_state[_GRANTED] = True
                st.rerun()
            st.error("Wrong token.")


def locked_pages() -> list:
    """The token form at every page's address, so a deep link opens the form (not "page not found")."""
    return [
        st.Page(token_page, title="entropyscope", default=True)
        if p.default
        else st.Page(token_page, title="entropyscope", url_path=p.url_path)
        for p in nav.PAGES
    ]
