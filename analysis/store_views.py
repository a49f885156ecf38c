"""The recipe for plain DuckDB: views over a whole store that show each row once, whatever is writing.

    from analysis.store_views import connect
    con = connect("runs")   # in-memory DuckDB; views steps, tokens, samples, hists, events
    con.sql("select run_id, step, value from steps where key = 'entropy/mean' order by run_id, step")

or, for the duckdb command line, `python -m analysis.store_views runs > views.sql` and
`duckdb -init views.sql`. Each view globs its runs' segments at every query, so a live run's new rows
appear without reconnecting (a run started later, at the next `connect`), and keeps one row per natural key (a resumed run's repeated steps: the newest;
a compaction's merged segment and the parts it superseded, both listed for a while: one copy). Compaction
leaves superseded parts in place for analysis.segments.GRACE_S, so a query never opens a vanished file.
A table with no segment yet when the views are made is an empty view until `connect` is called again.
"""

import argparse
from pathlib import Path

import duckdb

from analysis.schema import TABLES
from analysis.store_reader import StoreReader, clean_view_sql


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def views_sql(store: str | Path) -> str:
    """CREATE VIEW statements for every table of the store that has segments (others are left out). Each
    globs the table folder of every run there now (run folders that pass analysis.run_ids, so none leads
    out of the store): new segments of those runs show up at the next query, a new run at the next call."""
    reader = StoreReader(store)
    runs = reader.run_dirs()
    reader.close()
    out = []
    for table in TABLES:
        folders = [d.resolve() / table for d in runs if any((d / table).glob("*.parquet"))]
        if not folders:
            continue
        files = ", ".join(_quote(f / "*.parquet") for f in folders)
        raw = f"read_parquet([{files}], filename = true, file_row_number = true, union_by_name = true)"
        links = [_quote(p) for f in folders for p in f.glob("*.parquet") if p.is_symlink()]
        if links:  # writers never make one; it could lead out of the store
            raw = f"(SELECT * FROM {raw} WHERE filename NOT IN ({', '.join(links)}))"
        out.append(f"CREATE OR REPLACE VIEW {table} AS {clean_view_sql(table, raw)};")
    return "\n".join(out)


def connect(store: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the store's deduplicated views (empty ones for missing tables)."""
    con = duckdb.connect()
    for table, schema in TABLES.items():
        con.from_arrow(schema.empty_table()).create_view(table, replace=True)
    con.execute(views_sql(store))
    return con


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="print the store's deduplicated DuckDB views as SQL")
    parser.add_argument("store", nargs="?", default="runs")
    print(views_sql(parser.parse_args(argv).store))


if __name__ == "__main__":
    main()
