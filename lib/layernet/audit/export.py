"""The connection table as CSV and Parquet in the run folder, for a SIEM; and reading them back typed."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from layernet.audit.db import CATEGORY_COLUMNS, COLUMNS
from layernet.hops import VERDICTS

EXPORT_DIR = "audit"
_INTS = {"listener_port": "int32", "source_port": "int32", "bytes_in": "int64", "bytes_out": "int64",
         "duration_ms": "int64", "connection_id": "int64", "line": "int64"}


def export(df: pd.DataFrame, run_dir, name: str = "connections") -> dict[str, Path]:
    """Write `<run_dir>/audit/<name>.csv` (time as ISO 8601 UTC with milliseconds) and `<name>.parquet`."""
    out = Path(run_dir) / EXPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    pq, csv = out / f"{name}.parquet", out / f"{name}.csv"
    df.to_parquet(pq, index=False)
    text = df.copy()
    text["time"] = text["time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.slice(0, 23) + "Z"
    text.to_csv(csv, index=False)
    return {"csv": csv, "parquet": pq}


def read_parquet(path) -> pd.DataFrame:
    return pd.read_parquet(path)


def read_csv(path) -> pd.DataFrame:
    """A CSV written by `export`, with the connection table's types."""
    df = pd.read_csv(path, dtype={c: "string" for c in CATEGORY_COLUMNS + ["upstream_local", "verdict"]},
                     keep_default_na=False)
    df["time"] = pd.to_datetime(df["time"], format="ISO8601", utc=True).astype("datetime64[ms, UTC]")
    for c, typ in _INTS.items():
        df[c] = df[c].astype(typ)
    for c in CATEGORY_COLUMNS:
        df[c] = df[c].astype(str).astype("category")
    df["upstream_local"] = df["upstream_local"].astype(str)
    df["verdict"] = pd.Categorical(df["verdict"].astype(str), categories=VERDICTS)
    return df[COLUMNS]


# ----------------------------------------------------------------------------------------------- fleet
FLEET_COLUMNS = ["time", "listener_port", "source_ip", "source_port", "sni", "upstream_host", "bytes_in", "bytes_out",
                 "duration_ms", "verdict", "entry", "line"]


def fleet_parquet(parsed_by_site, out_dir) -> Path:
    """Write the connections of several sites ({site name: Parsed}) as one Parquet dataset under
    `<out_dir>/connections/`, partitioned by site, level and day (hive layout: site=S/level=L/day=D/), so a
    fleet's logs are queried together (`fleet_read`). DuckDB writes it straight from each site's table. A site
    already in the dataset is replaced (its partition is written anew); other sites stay."""
    root = Path(out_dir) / "connections"
    root.mkdir(parents=True, exist_ok=True)
    for site, parsed in parsed_by_site.items():
        shutil.rmtree(root / f"site={site}", ignore_errors=True)     # a site written again replaces its rows
        cols = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" if c == "verdict" else c for c in FLEET_COLUMNS)
        parsed.db.execute(f"""COPY (SELECT {cols}, ? AS site, level, CAST(time AS DATE) AS day FROM {parsed.table})
            TO '{root.as_posix()}' (FORMAT parquet, PARTITION_BY (site, level, day), OVERWRITE_OR_IGNORE,
                                    FILENAME_PATTERN 'part-{{uuid}}')""", [site]).fetchall()
    return root


def fleet_read(root, sql: str = "SELECT site, level, count(*) AS connections, "
               "count(*) FILTER (WHERE verdict = 'allowed') AS allowed, "
               "count(*) FILTER (WHERE verdict IN ('refused-name', 'refused-source')) AS refused "
               "FROM fleet GROUP BY site, level ORDER BY site, level") -> pd.DataFrame:
    """A query over the fleet dataset (the view `fleet`); by default the site x level view of the audit."""
    import duckdb

    db = duckdb.connect()
    db.execute(f"""CREATE VIEW fleet AS SELECT * FROM read_parquet('{Path(root).as_posix()}/**/*.parquet',
                   hive_partitioning = true)""")
    return db.execute(sql).df()
