"""entropyscope dashboard: the Streamlit entry, a router over the pages in app/views/.

Run: `entropyscope dashboard --store DIR`, or `streamlit run app/main.py -- --store DIR`
(also $ENTROPYSCOPE_STORE; default ./runs). Pages read the store only through app.loaders, which call
analysis/; nothing here imports torch or the trainer. Add a page by adding a PageSpec in app/nav.py.
With an access token set ($ENTROPYSCOPE_TOKEN), a session sees only app/gate.py's form until it presents it.
"""

import streamlit as st

from app import gate, nav
from app.store import store_path

st.set_page_config(page_title="entropyscope", page_icon=":material/monitoring:", layout="wide")
if gate.granted():
    page = st.navigation(nav.build_pages())
    st.sidebar.caption(f"store: `{store_path()}`")
else:  # every address shows the token form, and no page runs
    page = st.navigation(gate.locked_pages(), position="hidden")
page.run()
