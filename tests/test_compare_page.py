"""AppTest of the Compare page grouped over seeds: each group's mean curve with a 95% CI band and its runs
faintly behind, the legend naming the group and its n, and the final-value table with the pairwise verdict."""

import numpy as np
import pytest
from test_app_pages import assert_clean, figures, open_page, values

from analysis.schema import ENTROPY_MEAN
from analysis.store_writer import RunWriter

SEEDS = range(4)
STEPS = 20


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sweep of two controllers at 4 seeds (entropy ends near 0.6 vs 0.2) and one unrelated run."""
    store = tmp_path_factory.mktemp("sweep_store")
    rng = np.random.default_rng(1)
    for controller, final in (("repo_r", 0.6), ("none", 0.2)):
        for seed in SEEDS:
            end = final + 0.02 * rng.standard_normal()
            sweep = {"id": "s1", "params": {"controller": controller}, "seed": seed}
            config = {"model": "tiny-qwen2", "controller": controller, "seed": seed}
            with RunWriter(store, f"{controller}-{seed}", config, meta={"sweep": sweep}) as w:
                for step, h in enumerate(np.linspace(1.0, end, STEPS), start=1):
                    w.log_scalars(step, {ENTROPY_MEAN: float(h)})
    return store


RUNS = [f"{c}-{s}" for c in ("repo_r", "none") for s in SEEDS]


def test_grouped_compare_draws_mean_band_and_faint_runs(store, monkeypatch):
    at = open_page(store, "compare", monkeypatch, runs=RUNS, group="auto")
    assert_clean(at)
    assert at.selectbox(key="group").value == "auto"
    assert at.selectbox(key="group").options == ["none", "auto", "sweep:controller", "config:controller"]
    (fig,) = figures(at)
    assert fig["layout"]["meta"]["panel"] == f"compare:{ENTROPY_MEAN}"
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
    (verdict,) = at.dataframe[1].value["verdict"]
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
    assert sorted(t["name"] for t in figures(at)[0]["data"]) == sorted(RUNS[:2])
    assert not at.dataframe
