"""Compaction: merge a finished run's small segments into one segment per table."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.atomic import write_parquet_atomic
from analysis.schema import TABLES


def compact_run(run_dir: Path) -> dict[str, int]:
    """Rewrite each table of a finished run as a single segment; returns segments merged per table.

    The new segment is written (atomically) before the old ones are removed, so a crash loses nothing;
    a reader that listed the old files mid-compaction may fail once, so compact finished runs only.
    """
    merged = {}
    for table, schema in TABLES.items():
        parts = sorted((Path(run_dir) / table).glob("*.parquet"))
        if len(parts) < 2:
            continue
        data = pa.concat_tables([pq.read_table(p).cast(schema) for p in parts])
        write_parquet_atomic(Path(run_dir) / table / f"{0:08d}-compacted.parquet", data)
        for p in parts:
            if p.name != f"{0:08d}-compacted.parquet":
                p.unlink()
        merged[table] = len(parts)
    return merged
