"""Per-token colouring as HTML spans. Every piece of model or prompt text passes through html.escape:
completions are untrusted text and must never become markup in the page."""

import html
import math

import pandas as pd

COLOR_MODES = ("entropy", "advantage", "clip side")
CLIP_COLORS = {-1: "rgba(31,119,180,0.55)", 0: "rgba(0,0,0,0)", 1: "rgba(214,39,40,0.55)"}
CLIP_NAMES = {-1: "low", 0: "none", 1: "high"}
_SPAN = (
    '<span title="{title}" style="background:{bg};padding:1px 2px;margin:0 1px;border-radius:3px;'
    'white-space:pre-wrap;font-family:monospace">{text}</span>'
)


def _num(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def background(mode: str, row: pd.Series, scale: float) -> str:
    """Colour of one token: entropy white→orange, advantage blue (−) / red (+), clip side low/high."""
    if mode == "clip side":
        return CLIP_COLORS.get(
            int(_num(row["clip_side"])) if math.isfinite(_num(row["clip_side"])) else 0, "gray"
        )
    value = _num(row["entropy"] if mode == "entropy" else row["advantage"])
    if not math.isfinite(value) or scale <= 0:
        return "rgba(128,128,128,0.25)"
    a = min(abs(value) / scale, 1.0)
    if mode == "entropy":
        return f"rgba(255,127,14,{0.08 + 0.82 * a:.3f})"
    return f"rgba(214,39,40,{0.8 * a:.3f})" if value > 0 else f"rgba(31,119,180,{0.8 * a:.3f})"


def visible(text: str) -> str:
    """Make whitespace tokens visible without changing the text's layout much."""
    if text == "":
        return "∅"
    return text.replace("\n", "↵\n").replace("\t", "⇥\t")


def token_title(text: str, row: pd.Series) -> str:
    logp = _num(row["logp"])
    side = _num(row["clip_side"])
    return (
        f"{text!r} (id {int(row['token_id'])}, position {int(row['position'])})\n"
        f"log p {logp:.3f} (p {math.exp(logp) if math.isfinite(logp) else math.nan:.3f})\n"
        f"entropy {_num(row['entropy']):.3f} nats\n"
        f"advantage {_num(row['advantage']):+.3f}, ratio {_num(row['ratio']):.3f}\n"
        f"clip {CLIP_NAMES.get(int(side), '?') if math.isfinite(side) else '?'}, quadrant E{row['quadrant']}"
    )


def tokens_html(records: pd.DataFrame, texts: dict[int, str], mode: str, scale: float) -> str:
    """One sequence's token records (ordered by position) as escaped, coloured spans with hover titles."""
    spans = []
    for _, row in records.iterrows():
        text = texts.get(int(row["token_id"]), f"⟨{int(row['token_id'])}⟩")
        spans.append(
            _SPAN.format(
                title=html.escape(token_title(text, row), quote=True),
                bg=background(mode, row, scale),
                text=html.escape(visible(text)),
            )
        )
    return "".join(spans)


def sample_row_html(label: str, prompt: str, records: pd.DataFrame, texts: dict[int, str], mode: str,
                    scale: float) -> str:  # fmt: skip
    """One table row: the sample's label, then its prompt (faded) and coloured response tokens."""
    prompt_span = (
        f'<span style="opacity:0.55;font-family:monospace;white-space:pre-wrap">{html.escape(prompt)}</span>'
    )
    return (
        f'<tr><td style="opacity:0.7;font-size:0.85em;white-space:nowrap;padding-right:1em">{html.escape(label)}</td>'
        f'<td style="line-height:2">{prompt_span}{tokens_html(records, texts, mode, scale)}</td></tr>'
    )


def table_html(rows: list[str]) -> str:
    return f'<table class="entropyscope-tokens" style="border:none">{"".join(rows)}</table>'


def color_scale(mode: str, tokens: pd.DataFrame) -> float:
    """Value at full colour: the step's largest |value| (entropy or advantage), so colours use the range."""
    if mode == "clip side" or tokens.empty:
        return 1.0
    col = tokens["entropy" if mode == "entropy" else "advantage"].abs()
    top = float(col[col.map(math.isfinite)].max()) if len(col) else math.nan
    return top if math.isfinite(top) and top > 0 else 1.0


def legend_html(mode: str, scale: float) -> str:
    if mode == "clip side":
        items = [(CLIP_COLORS[-1], "clipped low (A<0, r<1−ε)"), (CLIP_COLORS[1], "clipped high (A>0, r>1+ε)")]
    elif mode == "entropy":
        items = [("rgba(255,127,14,0.08)", "H ≈ 0"), ("rgba(255,127,14,0.9)", f"H ≥ {scale:.2f} nats")]
    else:
        items = [("rgba(31,119,180,0.8)", f"A ≤ −{scale:.2f}"), ("rgba(214,39,40,0.8)", f"A ≥ +{scale:.2f}")]
    spans = " … ".join(_SPAN.format(title="", bg=bg, text=html.escape(label)) for bg, label in items)
    return f'<span style="font-size:0.85em;opacity:0.8">colour: {spans} · hover a token for log p, entropy, advantage, ratio</span>'
