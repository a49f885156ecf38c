"""TRL under 2 processes on CPU (torch.distributed.run, gloo): one store, each step once, entropy and clip
fractions reduced over both ranks exactly as TRL's own all-rank numbers, a control file applied on both ranks
at the same step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import schema
from analysis.store_reader import StoreReader
from trainer.launch import free_port

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_two_ranks_write_one_store(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), str(HERE / "trl_two_ranks.py"), str(store), str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    # the change written while step 2 ran is in force on both ranks from the same step
    assert ranks[0]["in_force"] == ranks[1]["in_force"] == [[1, None], [2, 2.5], [3, 2.5]]
    reader = StoreReader(store)
    try:
        raw = reader.query("SELECT step, key, value FROM seg_steps", [], ["steps"], ["ranks"])
        samples = reader.samples("ranks", 1)
    finally:
        reader.close()
    assert [d.name for d in store.iterdir()] == ["ranks"]
    assert not raw.duplicated(["step", "key"]).any() and sorted(raw["step"].unique()) == [1, 2, 3]
    ours = {(s, k): v for s, k, v in raw.itertuples(index=False)}
    trl = ranks[0]["trl"]
    for step in (1, 2, 3):
        assert ours[(step, schema.ENTROPY_MEAN)] == pytest.approx(trl[str(step)]["entropy"], abs=1e-5)
        assert ours[(step, schema.CLIP_FRAC)] == pytest.approx(
            trl[str(step)]["clip_ratio/region_mean"], abs=1e-6
        )
    assert ours[(2, schema.CLIP_FRAC)] > 0
    assert len(samples) == 8  # both ranks' 4 completions, written once
