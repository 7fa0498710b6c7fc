"""The connection table as CSV and Parquet in the run folder, for a SIEM; and reading them back typed."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from layernet.audit.parse import CATEGORY_COLUMNS, COLUMNS, VERDICTS

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
