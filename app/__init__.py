"""Streamlit dashboard over a run store: `entropyscope dashboard --store DIR` or
`streamlit run app/main.py -- --store DIR`. Depends on analysis/ only; never imports torch or trainer."""
