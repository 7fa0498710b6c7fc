"""The CLI starts fast: importing it (and the audit command's module) loads no pandas, DuckDB, numpy or plotly."""
import json
import subprocess
import sys


def test_cli_import_loads_no_heavy_library():
    code = ("import json, sys, layernet.cli, layernet.audit.cli, layernet.audit.collect, layernet.audit.verdict; "
            "print(json.dumps(sorted(m for m in ('pandas', 'duckdb', 'plotly', 'numpy', 'pyarrow') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
