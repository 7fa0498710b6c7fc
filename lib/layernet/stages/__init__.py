"""One module per stage (plan -> apply -> verify, see base.py): preflight, infrastructure, arc, aio, telemetry,
audit, hardening."""
