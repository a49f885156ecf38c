"""The page registry: main.py builds st.navigation from PAGES; add a page by adding one PageSpec."""

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

# Not "pages/": beside main.py Streamlit takes that folder for a v1 multipage app, and a fresh server then
# answers its first deep link (/run?run=...) with a "Page not found" dialog over the right page.
PAGES_DIR = Path(__file__).parent / "views"


@dataclass(frozen=True)
class PageSpec:
    name: str  # file stem under app/views/, also how other pages refer to it
    title: str
    icon: str
    url_path: str
    default: bool = False


PAGES: tuple[PageSpec, ...] = (
    PageSpec("runs", "Runs", ":material/table_rows:", "runs", default=True),
    PageSpec("compare", "Compare", ":material/stacked_line_chart:", "compare"),
    PageSpec("sweeps", "Sweeps", ":material/grid_view:", "sweeps"),
    PageSpec("run_detail", "Run detail", ":material/monitoring:", "run"),
    PageSpec("token_inspector", "Token inspector", ":material/text_fields:", "tokens"),
    PageSpec("control", "Control", ":material/tune:", "control"),
    PageSpec("alerts", "Alerts", ":material/notifications:", "alerts"),
)


def page_file(name: str) -> str:
    """Path of a page's script, as st.switch_page and st.page_link take it."""
    if name not in {p.name for p in PAGES}:
        raise KeyError(f"unknown page {name!r}; pages: {', '.join(p.name for p in PAGES)}")
    return str(PAGES_DIR / f"{name}.py")


def build_pages() -> list:
    # The default page lives at the root URL, so it takes no url_path.
    return [
        st.Page(page_file(p.name), title=p.title, icon=p.icon, default=True)
        if p.default
        else st.Page(page_file(p.name), title=p.title, icon=p.icon, url_path=p.url_path)
        for p in PAGES
    ]
