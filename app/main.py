"""entropyscope dashboard: the Streamlit entry, a router over the pages in app/pages/.

Run: `entropyscope dashboard --store DIR`, or `streamlit run app/main.py -- --store DIR`
(also $ENTROPYSCOPE_STORE; default ./runs). Pages read the store only through app.loaders, which call
analysis/; nothing here imports torch or the trainer. Add a page by adding a PageSpec in app/nav.py.
"""

import streamlit as st

from app import nav
from app.store import store_path

st.set_page_config(page_title="entropyscope", page_icon=":material/monitoring:", layout="wide")
page = st.navigation(nav.build_pages())
st.sidebar.caption(f"store: `{store_path()}`")
page.run()
