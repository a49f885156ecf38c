"""One sweep's settings judged over seeds, as the tables of docs/seed_studies.md: each setting's final values
(IQM with 95% CI) and how many runs ended within a band around their setpoint, against a baseline setting when one is named (IQM ratio with CI, P(setting > baseline) with
CI and the verdict of `entropyscope compare`), and, within each value of a key, the best setting by each metric
with the settings not distinguishable from it (the Sweeps page's rule).

    .venv/bin/python bench/seed_table.py --store DIR --sweep ID [--baseline controller=none] [--within controller]
                                         [--metrics entropy/mean reward/mean pass@k]

Final value = mean of the last 10% of steps, finished runs only (analysis.stats). `entropy/target` adds the
final entropy as a multiple of the run's own final setpoint (`entropy ÷ target`), where runs log a target.
"""

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import schema, stats  # noqa: E402
from analysis.compare import higher_phrase, run_infos  # noqa: E402
from analysis.groups import AUTO, Group, group_runs, params_match, parse_pairs  # noqa: E402
from analysis.plots import run_series  # noqa: E402
from analysis.store_reader import StoreReader  # noqa: E402
from analysis.sweeps import Setting, rank, settings, sweep_runs  # noqa: E402

RELATIVE = "entropy ÷ target"
METRICS = [schema.ENTROPY_MEAN, schema.REWARD_MEAN, schema.PASS_AT_K]


def final_values(store: str, run_ids: list[str], metrics: list[str]) -> dict[str, dict[str, float]]:
    """{metric: {run: final value}}, with RELATIVE from entropy/mean ÷ entropy/target step by step."""
    keys = list(dict.fromkeys([*metrics, schema.ENTROPY_MEAN, schema.ENTROPY_TARGET]))
    series = run_series(store, run_ids, keys)
    out: dict[str, dict[str, float]] = {}
    for m in metrics:
        traces = [series[r][m].to_numpy() if m in series[r] else [] for r in run_ids]
        out[m] = dict(zip(run_ids, stats.final_values(traces), strict=True))
    if all(schema.ENTROPY_TARGET in series[r] for r in run_ids):
        traces = [
            (series[r][schema.ENTROPY_MEAN] / series[r][schema.ENTROPY_TARGET]).to_numpy() for r in run_ids
        ]
        out[RELATIVE] = dict(zip(run_ids, stats.final_values(traces), strict=True))
    return out


def ci(x: float, lo_hi: tuple[float, float], fmt: str = ".3f") -> str:
    lo, hi = lo_hi
    return f"{x:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]" if math.isfinite(lo) else f"{x:{fmt}}"


def setting_table(
    by_metric: dict[str, list[Setting]], baseline: Group | None, band: tuple[float, float]
) -> str:
    metrics = list(by_metric)
    head = ["setting", "n", *(f"{m} IQM [95% CI]" for m in metrics)]
    if RELATIVE in by_metric:
        head.append(f"runs within [{band[0]}, {band[1]}]x target")
    if baseline is not None:
        head += [f"{m} ratio to baseline" for m in metrics] + [f"P({m} > baseline's)" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdicts = []
    first = by_metric[metrics[0]]
    for i, s in enumerate(first):
        row = [s.group.name, str(s.stats.n if s.stats else 0)]
        row += [ci(by_metric[m][i].stats.iqm, by_metric[m][i].stats.iqm_ci) if by_metric[m][i].stats else "-"
                for m in metrics]  # fmt: skip
        if RELATIVE in by_metric:
            rel = by_metric[RELATIVE][i].values.values()
            row.append(f"{sum(band[0] <= v <= band[1] for v in rel)}/{len(rel)}")
        if baseline is not None:
            base = {m: next(x for x in by_metric[m] if x.group is baseline) for m in metrics}
            pairs = {}
            for m in metrics:
                if by_metric[m][i].stats and base[m].stats and by_metric[m][i].group is not baseline:
                    pairs[m] = stats.pair_stats(
                        list(by_metric[m][i].values.values()), list(base[m].values.values())
                    )
            row += [
                ci(pairs[m].ratio, pairs[m].ratio_ci, ".2f") + "x" if m in pairs else "1" for m in metrics
            ]
            row += [ci(pairs[m].p, pairs[m].p_ci, ".2f") if m in pairs else "-" for m in metrics]
            verdicts += [
                f"- {m}: {stats.verdict(s.group.name, baseline.name, pairs[m], higher_phrase(m))}"
                for m in metrics if m in pairs
            ]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join([*lines, "", *verdicts])


def rankings(by_metric: dict[str, list[Setting]], within: str | None) -> str:
    """Best setting per metric (highest IQM) within each value of `within`, and the settings tied with it."""
    out = []
    for m, found in by_metric.items():
        parts: dict[str, list[Setting]] = {}
        for s in found:
            parts.setdefault(str(s.group.params.get(within, "")) if within else "", []).append(s)
        for value, part in parts.items():
            r = rank(part, m, "maximize")
            if r is None:
                continue
            where = f" among {within}={value}" if within else ""
            ties = ", ".join(t.group.name for t, _ in r.ties) or "none"
            out.append(f"- highest {m}{where}: {r.best.group.name} (IQM {r.best.stats.iqm:.3f}); "
                       f"not distinguishable from it: {ties}")  # fmt: skip
            out += [f"  - {line}" for _, line in r.beaten]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True)
    p.add_argument("--sweep", required=True)
    p.add_argument(
        "--baseline", default=None, help="key=value[,key=value]: the setting the others are judged against"
    )
    p.add_argument("--within", default=None, help="rank the settings separately for each value of this key")
    p.add_argument("--metrics", nargs="+", default=METRICS)
    p.add_argument(
        "--band", nargs=2, type=float, default=(0.6, 1.3), help="what counts as holding the target"
    )
    args = p.parse_args(argv)
    reader = StoreReader(args.store)
    infos = run_infos(reader)
    run_ids = sweep_runs(infos, args.sweep)
    if not run_ids:
        p.error(f"no runs of sweep {args.sweep!r} in {args.store!r}")
    groups = group_runs(infos, run_ids, AUTO)
    values = final_values(args.store, run_ids, args.metrics)
    by_metric = {m: settings(groups, infos, v) for m, v in values.items()}
    baseline = None
    if args.baseline:
        wanted = parse_pairs(args.baseline, args.baseline)
        baseline = next((g for g in groups if params_match(g.params, wanted)), None)
        if baseline is None:
            p.error(f"no setting of sweep {args.sweep!r} matches --baseline {args.baseline}")
    print(setting_table(by_metric, baseline, tuple(args.band)))
    print()
    print(rankings(by_metric, args.within))


if __name__ == "__main__":
    main()
