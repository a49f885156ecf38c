"""A store reader in its own process for the soak test: query every 50 ms until the stop file appears, then once more.

    python tests/soak_reader.py duckdb|store_reader STORE RUN_ID STOP_FILE OUT.json

`duckdb` uses the documented plain-DuckDB recipe (analysis.store_views.connect); `store_reader` the
StoreReader API. Each read counts the run's `steps` rows and the (run, step, key) keys seen more than once;
OUT.json gets the number of reads, the errors (text), the most duplicates seen and whether the row count
ever went down; OUT.json.ready appears after the first read.
"""

import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.store_reader import StoreReader  # noqa: E402
from analysis.store_views import connect  # noqa: E402

COUNT_SQL = """
SELECT count(*) AS n, count(*) - count(DISTINCT (run_id, step, "key")) AS dupes FROM steps WHERE run_id = ?
"""


def read_once(mode: str, store: str, run_id: str, reader: StoreReader) -> tuple[int, int]:
    if mode == "duckdb":
        con = connect(store)
        try:
            return con.execute(COUNT_SQL, [run_id]).fetchone()
        finally:
            con.close()
    df = reader.table("steps", [run_id])
    return len(df), int(df.duplicated(["run_id", "step", "key"]).sum())


def main() -> None:
    mode, store, run_id, stop, out = sys.argv[1:]
    reader = StoreReader(store)
    reads, errors, max_dupes, backwards, last = 0, [], 0, 0, 0
    while True:
        stopping = Path(stop).exists()  # checked before the read: the last read starts after every write
        try:
            n, dupes = read_once(mode, store, run_id, reader)
            reads += 1
            if reads == 1:
                Path(out + ".ready").touch()
            max_dupes = max(max_dupes, dupes)
            backwards += n < last
            last = max(last, n)
        except Exception:
            errors.append(traceback.format_exc(limit=2))
        if stopping:
            break
        time.sleep(0.05)
    Path(out).write_text(json.dumps({"reads": reads, "errors": errors, "max_dupes": max_dupes,
                                     "backwards": backwards, "last": last}))  # fmt: skip


if __name__ == "__main__":
    main()
