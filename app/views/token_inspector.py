"""Token inspector: a step's sampled completions with each token coloured by entropy, advantage or clip
side (hover for token, log p, entropy, advantage, ratio), and the run's highest-entropy "forking" tokens.

Token text comes from the tokenizer.json saved with the run's (or a same-model run's) checkpoints; without
one, tokens read ⟨id⟩. All text is HTML-escaped before it reaches the page.
"""

import pandas as pd
import streamlit as st

from app import loaders, ui
from app.token_html import COLOR_MODES, color_scale, legend_html, sample_row_html, table_html

MAX_SEQUENCES = 32  # sequences drawn per step; the trainer records token details for a few per step
FORKING_LIMIT = 40


def texts_for(store: str, run_id: str, ids: list[int]) -> dict[int, str]:
    texts, found = loaders.token_texts(
        store, run_id, tuple(sorted(set(ids))), loaders.version(store, [run_id], [])
    )
    if not found:
        st.caption("No tokenizer.json in this run's checkpoints or model directory: tokens shown as ⟨id⟩.")
    return texts


def step_view(store: str, run_id: str, step: int, mode: str) -> None:
    samples, tokens = loaders.step_samples(
        store, run_id, step, loaders.version(store, [run_id], ["samples", "tokens"])
    )
    if tokens.empty:
        st.info(f"No per-token records at step {step}.")
    else:
        texts = texts_for(store, run_id, tokens["token_id"].astype(int).tolist())
        scale = color_scale(mode, tokens)
        st.markdown(legend_html(mode, scale), unsafe_allow_html=True)
        by_id = samples.set_index("sample_id") if not samples.empty else pd.DataFrame()
        rows = []
        for sample_id, recs in list(tokens.groupby("sample_id", sort=True))[:MAX_SEQUENCES]:
            meta = by_id.loc[sample_id] if sample_id in by_id.index else None
            prompt = str(meta["prompt_text"]) if meta is not None else ""
            label = (f"#{sample_id} · group {meta['group_id']} · reward {meta['reward']:.2f}"
                     f" {'✓' if meta['correct'] else '✗'}") if meta is not None else f"#{sample_id}"  # fmt: skip
            rows.append(sample_row_html(label, prompt, recs.sort_values("position"), texts, mode, scale))
        st.markdown(table_html(rows), unsafe_allow_html=True)
    if not samples.empty:
        with st.expander(f"All {len(samples)} completions at step {step}"):
            cols = ["sample_id", "group_id", "prompt_text", "response_text", "reward", "correct"]
            st.dataframe(samples[cols], hide_index=True)  # plain cells: never rendered as HTML


def forking_table(store: str, run_id: str) -> None:
    st.subheader("Forking tokens: highest entropy across steps")
    top = loaders.forking_tokens(
        store, run_id, FORKING_LIMIT, loaders.version(store, [run_id], ["samples", "tokens"])
    )
    if top.empty:
        st.caption("No per-token records in this run yet.")
        return
    ids = top["token_id"].astype(int).tolist()
    for resp in top["response_token_ids"].dropna():
        ids.extend(int(i) for i in resp)
    texts = texts_for(store, run_id, ids)

    def context(row: pd.Series) -> str:
        resp = row["response_token_ids"]
        prefix = (
            "".join(texts.get(int(i), "") for i in resp[: int(row["position"])]) if resp is not None else ""
        )
        prompt = row["prompt_text"] if isinstance(row["prompt_text"], str) else ""
        return f"{prompt}{prefix}[{texts.get(int(row['token_id']), '')}]"

    view = pd.DataFrame({
        "step": top["step"], "token": [texts.get(int(i), "") for i in top["token_id"]],
        "entropy": top["entropy"], "log p": top["logp"], "advantage": top["advantage"],
        "context (prompt + response up to [token])": top.apply(context, axis=1), "reward": top["reward"],
    })  # fmt: skip
    st.dataframe(view, hide_index=True, column_config={
        "entropy": st.column_config.NumberColumn(format="%.3f"), "log p": st.column_config.NumberColumn(format="%.3f"),
        "advantage": st.column_config.NumberColumn(format="%+.3f"),
    })  # fmt: skip


def main() -> None:
    st.title("Token inspector")
    store = ui.store()
    runs = ui.load_runs(store)
    if runs is None:
        return
    run_id = ui.run_picker(runs)
    with ui.unavailable(f"Tokens of {run_id}"):
        steps = loaders.steps_with_samples(store, run_id, loaders.version(store, [run_id], ["samples"]))
        if not steps:
            st.info(f"Run {run_id} has no sampled completions yet.")
            return
        c1, c2 = st.columns([3, 2])
        step = c1.select_slider("Step", steps, value=steps[-1], key="step", bind="query-params")
        mode = c2.segmented_control(
            "Colour by", COLOR_MODES, default="entropy", key="color", bind="query-params"
        )
        step_view(store, run_id, int(step), mode or "entropy")
        forking_table(store, run_id)


main()
