"""Sealing an ended run: the values readers cache per run, written into the run's folder when it ends.

An ended run's listing summary, alert count and (default rules') watch states depend only on its files,
and whoever ends a run (the trainer and the TRL integration after compaction, `entropyscope import`,
`entropyscope compact`) has just written them. `seal_run` computes each value with the very code the
readers use and writes them with the files' fingerprints to `<run>/.summary.json` (analysis.run_cache), so
the first `entropyscope runs`, `watch --once` or Runs page on a store our tools wrote reads no segment of an
ended run. A run changed afterwards (a resume, a watch recording alerts) no longer matches its fingerprints
and is read as before; a store we cannot write just gets no file.
"""

from pathlib import Path

import duckdb
import pyarrow as pa

from analysis.dashboard_queries import sealed_alert_count
from analysis.run_cache import write_run_file
from analysis.store_reader import StoreReader
from analysis.store_writer import read_run_json
from analysis.watch import sealed_state

# What reading a damaged run can raise; its values are then simply not sealed (readers compute them).
_UNREADABLE = (OSError, pa.ArrowException, duckdb.Error)


def seal_run(run_dir: str | Path) -> bool:
    """Write the per-run values of an ended run (not `running`); True when written."""
    run_dir = Path(run_dir)
    status = (read_run_json(run_dir) or {}).get("status")
    if not isinstance(status, str) or status == "running":
        return False
    reader = StoreReader(run_dir.parent)
    try:
        entries = dict([reader.sealed_summary(run_dir.name), sealed_alert_count(reader, run_dir.name)])
        if (watch := sealed_state(run_dir.parent, run_dir.name)) is not None:
            entries[watch[0]] = watch[1]
    except _UNREADABLE:
        return False
    finally:
        reader.close()
    return write_run_file(run_dir, entries)
