"""The runs table as people read it in a terminal (`entropyscope runs`): the Runs page's columns and units."""

import pandas as pd

from analysis.liveness import heartbeat_text, status_label
from analysis.metrics import FINAL_TAIL

FINAL_NOTE = f"final = mean over the last {100 // FINAL_TAIL}% of a run's steps; last = its last step"


def runs_text(runs: pd.DataFrame, now: float) -> str:
    """StoreReader.runs() as a fixed-width table: where each run came from, final and last entropy, change vs
    H0 in percent, final reward, and the heartbeat's age for running runs only."""

    def num(values: pd.Series, fmt: str) -> list[str]:
        return [fmt.format(v) if pd.notna(v) else "–" for v in values]

    shown = pd.DataFrame(
        {
            "run": runs["run_id"],
            "status": [
                status_label(s, h, now) for s, h in zip(runs["status"], runs["heartbeat"], strict=True)
            ],
            "step": num(runs["last_step"], "{}"),
            **{c: runs[c].fillna("–") for c in ("algo", "controller", "precision", "source")},
            "H0": num(runs["h0"], "{:.3f}"),
            "final H": num(runs["entropy"], "{:.3f}"),
            "last H": num(runs["entropy_last"], "{:.3f}"),
            "ΔH vs H0": num(runs["entropy_change"], "{:+.0%}"),
            "final reward": num(runs["reward"], "{:.3f}"),
            "heartbeat": [
                heartbeat_text(s, h, now) for s, h in zip(runs["status"], runs["heartbeat"], strict=True)
            ],
        }
    )
    return f"{shown.to_string(index=False)}\n{FINAL_NOTE}"
