"""AppTest of the Compare page grouped over seeds: each group's mean curve with a 95% CI band and its runs
faintly behind, the legend naming the group and its n, and the final-value table with the pairwise verdict."""

from pathlib import Path

import numpy as np
import pytest
from test_app_pages import assert_clean, figures, open_page, values

from analysis.schema import ENTROPY_MEAN
from analysis.store_writer import RunWriter

SEEDS = range(4)
STEPS = 20


def write_sweep(store: Path) -> None:
    """A sweep of two controllers at 4 seeds each: entropy falls from 1.0 to about 0.6 (repo_r) or 0.2 (none)."""
    rng = np.random.default_rng(1)
    for controller, final in (("repo_r", 0.6), ("none", 0.2)):
        for seed in SEEDS:
            end = final + 0.02 * rng.standard_normal()
            sweep = {"id": "s1", "params": {"controller": controller}, "seed": seed}
            config = {"model": "tiny-qwen2", "controller": controller, "seed": seed}
            with RunWriter(store, f"{controller}-{seed}", config, meta={"sweep": sweep}) as w:
                for step, h in enumerate(np.linspace(1.0, end, STEPS), start=1):
                    w.log_scalars(step, {ENTROPY_MEAN: float(h)})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = tmp_path_factory.mktemp("sweep_store")
    write_sweep(store)
    return store


RUNS = [f"{c}-{s}" for c in ("repo_r", "none") for s in SEEDS]


def test_grouped_compare_draws_mean_band_and_faint_runs(store, monkeypatch):
    at = open_page(store, "compare", monkeypatch, runs=RUNS, group="auto")
    assert_clean(at)
    assert not [m.value for m in at.markdown if "A first visit" in m.value]  # no stray docstring on the page
    assert at.selectbox(key="group").value == "auto"
    assert at.selectbox(key="group").options == ["none", "auto", "sweep:controller", "config:controller"]
    (fig,) = figures(at)
    assert fig["layout"]["meta"]["panel"] == f"compare:{ENTROPY_MEAN}"
    assert fig["layout"]["yaxis"]["title"]["text"] == "entropy/mean (nats)"
    legend = [t["name"] for t in fig["data"] if t.get("showlegend", True)]
    assert sorted(legend) == ["controller=none (n=4)", "controller=repo_r (n=4)"]
    runs = [t for t in fig["data"] if t["name"].endswith(" run")]
    assert len(runs) == 8 and all(t["opacity"] < 0.5 for t in runs)
    bands = [t for t in fig["data"] if t.get("fill") == "tonexty"]
    assert len(bands) == 2
    mean = next(t for t in fig["data"] if t["name"] == "controller=repo_r (n=4)")
    lo = next(t for t in fig["data"] if t["name"] == "controller=repo_r ci lo")
    hi = next(t for t in fig["data"] if t["name"] == "controller=repo_r ci hi")
    m, low, high = values(mean["y"]), values(lo["y"]), values(hi["y"])
    assert np.all(low <= m + 1e-12) and np.all(m <= high + 1e-12) and np.any(high - low > 0)
    # under the chart: final values with CIs per group, and the verdict
    table = at.dataframe[0].value
    assert sorted(table["group"]) == ["controller=none", "controller=repo_r"] and set(table["n"]) == {4}
    assert list(at.dataframe[1].value.columns) == ["A", "B", "IQM A / B", "P(A > B)"]
    (verdict,) = [t.value for t in at.text]
    assert (
        verdict
        == "controller=repo_r keeps more entropy than controller=none: P = 1.00 [1.00, 1.00], 4 seeds each"
    )


def test_group_by_a_config_key_and_none(store, monkeypatch):
    at = open_page(store, "compare", monkeypatch, runs=RUNS, group="config:controller")
    assert_clean(at)
    legend = [t["name"] for t in figures(at)[0]["data"] if t.get("showlegend", True)]
    assert sorted(legend) == ["controller=none (n=4)", "controller=repo_r (n=4)"]
    at = open_page(store, "compare", monkeypatch, runs=RUNS[:2])
    assert_clean(at)
    assert at.selectbox(key="group").value == "none"  # the default: one line per run, as before
    assert sorted(t["name"] for t in figures(at)[0]["data"] if t.get("showlegend", True)) == sorted(RUNS[:2])
    assert not at.dataframe
