"""Static figures and tables from a run store, for the README (torch-free; matplotlib, imported lazily).

    python -m analysis.plots [--store sample_runs] [--runs RUN ...] [--out docs/entropy_curves.png]

writes the entropy curves of the runs as a PNG and prints the Markdown summary table (entropy change vs H0,
final reward, pass@1, pass@k). "Final" is the mean of the last 10% of steps, H0 the first step's entropy,
as in the trainer's run summary. matplotlib comes with mlflow, a core dependency.
"""

import argparse
import math
from pathlib import Path

import pandas as pd

from analysis import schema
from analysis.metrics import final_value
from analysis.store_reader import StoreReader

SUMMARY_KEYS = [
    schema.ENTROPY_MEAN,
    schema.ENTROPY_TARGET,
    schema.REWARD_MEAN,
    schema.PASS_AT_1,
    schema.PASS_AT_K,
]


def run_series(store: str | Path, run_ids: list[str], keys: list[str]) -> dict[str, dict[str, pd.Series]]:
    """{run: {key: values indexed by step}} from the raw per-step scalars."""
    df = StoreReader(store).scalars(run_ids, keys, max_points=1_000_000)
    out: dict[str, dict[str, pd.Series]] = {r: {} for r in run_ids}
    for (run, key), g in df.groupby(["run_id", "key"]):
        g = g.sort_values("step")
        out[run][key] = pd.Series(g["value"].astype(float).to_numpy(), index=g["step"].to_numpy())
    return out


def summary_rows(store: str | Path, run_ids: list[str]) -> list[dict[str, float | str]]:
    """Per run: H0, final entropy, its change vs H0, final reward, pass@1 and pass@k (last 10% of steps)."""
    rows = []
    for run, s in run_series(store, run_ids, SUMMARY_KEYS).items():
        ent = s.get(schema.ENTROPY_MEAN)
        if ent is None or ent.empty:
            continue

        def last(key: str, s: dict[str, pd.Series] = s) -> float:
            x = s.get(key)
            return final_value(x.to_numpy()) if x is not None else math.nan

        h0, final = float(ent.iloc[0]), last(schema.ENTROPY_MEAN)
        rows.append(
            {
                "run": run,
                "steps": int(ent.index.max()),
                "h0": h0,
                "final_entropy": final,
                "change": final / h0 - 1,
                "reward": last(schema.REWARD_MEAN),
                "pass@1": last(schema.PASS_AT_1),
                "pass@k": last(schema.PASS_AT_K),
            }
        )
    return rows


def summary_markdown(rows: list[dict[str, float | str]]) -> str:
    """The README table."""
    lines = [
        "| run | H0 (nats) | final entropy | change vs H0 | final reward | pass@1 | pass@k |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['run']}` | {r['h0']:.3f} | {r['final_entropy']:.3f} | {r['change']:+.0%} "
            f"| {r['reward']:.3f} | {r['pass@1']:.3f} | {r['pass@k']:.3f} |"
        )
    return "\n".join(lines)


def entropy_curves_png(store: str | Path, run_ids: list[str], out: str | Path, smooth: int = 9) -> Path:
    """Mean token entropy per step (centred moving mean over `smooth` steps, raw trace faint) of each run,
    with the setpoint of runs whose target moves (schedules) dashed; and the reward below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = run_series(store, run_ids, [schema.ENTROPY_MEAN, schema.ENTROPY_TARGET, schema.REWARD_MEAN])
    fig, (ax, ax_r) = plt.subplots(
        2, 1, figsize=(9, 6.4), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]}, dpi=110
    )
    colors = plt.get_cmap("tab10").colors
    for i, run in enumerate(run_ids):
        s, c = series.get(run, {}), colors[i % len(colors)]
        ent = s.get(schema.ENTROPY_MEAN)
        if ent is None or ent.empty:
            continue
        ax.plot(ent.index, ent.to_numpy(), color=c, alpha=0.18, lw=0.8)
        ax.plot(ent.index, ent.rolling(smooth, center=True, min_periods=1).mean(), color=c, lw=1.8, label=run)
        tgt = s.get(schema.ENTROPY_TARGET)
        if tgt is not None and tgt.nunique() > 1:
            ax.plot(tgt.index, tgt.to_numpy(), color=c, lw=1.0, ls="--", label=f"{run} target")
        rew = s.get(schema.REWARD_MEAN)
        if rew is not None:
            ax_r.plot(rew.index, rew.rolling(smooth, center=True, min_periods=1).mean(), color=c, lw=1.4)
    ax.set_ylabel("mean token entropy (nats)")
    ax.set_title(f"Entropy per step ({smooth}-step moving mean; raw faint)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax_r.set_ylabel("reward")
    ax_r.set_xlabel("step")
    ax_r.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sample_runs")
    parser.add_argument("--runs", nargs="*", help="run ids (default: every run in the store)")
    parser.add_argument("--out", default="docs/entropy_curves.png")
    args = parser.parse_args(argv)
    runs = args.runs or sorted(p.name for p in Path(args.store).iterdir() if (p / "run.json").is_file())
    print(f"wrote {entropy_curves_png(args.store, runs, args.out)}")
    print(summary_markdown(summary_rows(args.store, runs)))


if __name__ == "__main__":
    main()
