"""Connection audit: Envoy JSON access logs -> typed pandas tables, findings, charts and exports.

    collect   log lines per proxy level, from a target (lab files, Envoy pods) or a folder of saved logs
    parse     the typed connection table with a verdict and the matched allow-list entry per row, run from
              scan (the files' bytes), db (DuckDB and the columns), passes (the SQL) and health (log checks)
    findings  per level, refused attempts, allow-list coverage, end-to-end paths, anomalies
    charts    plotly figures, embedded with plotly.js inline so reports render offline
    compare   the audit's counts per level against the probe matrix of the same run
    export    CSV and Parquet of the connection table
    stage     what notebook 05 calls
"""
