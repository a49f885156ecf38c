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
from analysis.groups import Group, params_match, parse_pairs  # noqa: E402
from analysis.plots import run_series  # noqa: E402
from analysis.store_reader import StoreReader  # noqa: E402
from analysis.sweeps import Setting, analyse, rank, settings, sweep_runs  # noqa: E402

RELATIVE = "entropy ÷ target"
METRICS = [schema.ENTROPY_MEAN, schema.REWARD_MEAN, schema.PASS_AT_K]


def relative_finals(store: str, run_ids: list[str]) -> dict[str, float] | None:
    """{run: final entropy ÷ setpoint}, the ratio taken step by step; None unless every run logs a target."""
    series = run_series(store, run_ids, [schema.ENTROPY_MEAN, schema.ENTROPY_TARGET])
    if not all(schema.ENTROPY_TARGET in series[r] and schema.ENTROPY_MEAN in series[r] for r in run_ids):
        return None
    traces = [(series[r][schema.ENTROPY_MEAN] / series[r][schema.ENTROPY_TARGET]).to_numpy() for r in run_ids]
    return dict(zip(run_ids, stats.final_values(traces), strict=True))


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
    if not sweep_runs(infos, args.sweep):
        p.error(f"no runs of sweep {args.sweep!r} in {args.store!r}")
    result = analyse(reader, infos, args.sweep, args.metrics, args.metrics[0], "maximize")
    groups, by_metric = result.groups, dict(result.by_metric)
    relative = relative_finals(args.store, list(result.finals.index))
    if relative is not None:
        by_metric[RELATIVE] = settings(groups, infos, relative)
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
