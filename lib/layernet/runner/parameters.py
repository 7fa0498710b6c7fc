"""A run's parameters from the command line, checked before anything runs: site overrides (`-p key.path=value`),
stage parameters (`-s STAGE.KEY=VALUE`, only those the runbook declares, of the declared kind) and the stage inputs
that can be checked up front. No secret is ever a parameter."""
from __future__ import annotations

import re
from datetime import date
from typing import Any

from layernet.audit.collect import AuditInputError, check_logdir, check_since
from layernet.runner.runbook import Runbook, RunnerInputError, Stage
from layernet.site import is_secret_key, looks_secret, parse_value
from layernet.site.model import declared_field


def check_overrides(overrides: list[str]) -> None:
    """`-p` site overrides: RunnerInputError (the value hidden) when one names a secret or its value looks like one."""
    for ov in overrides:
        key, _, value = str(ov).partition("=")
        if any(is_secret_key(part) for part in re.split(r"[.\[\]]", key)) and not declared_field(key.strip()):
            raise RunnerInputError(f"-p {key[:80]}=...: secrets may not be passed as parameters (the value is hidden); "
                                   "set them in the environment or use the Azure credential chain")
        if looks_secret(value):
            raise RunnerInputError(f"-p {key[:80]}=...: the value looks like a connection string, token or key (it is "
                                   "hidden and was not stored); secrets may not be passed as parameters")


def apply_stage_params(book: Runbook, items: list[str]) -> Runbook:
    """`STAGE.KEY=VALUE` overrides of stage parameters the runbook declares (e.g. audit.log_dir=/evidence/logs)."""
    stages = {s.name: s for s in book.stages}
    problems = []
    given: dict[str, int] = {}
    for n, item in enumerate(items, 1):
        key, sep, text = item.partition("=")
        stage, dot, param = key.partition(".")
        shown = f"{key[:80]}=..." if looks_secret(text) or is_secret_key(param) else (item if len(item) <= 120 else item[:120] + "...")
        value, why = parse_value(text) if sep else (None, None)
        declared = stages[stage].parameters.get(param) if stage in stages else None
        if isinstance(declared, str) and isinstance(value, date):     # YAML reads 2025-03-01 as a date: keep the text
            value = text.strip()
        if sep and key.strip() in given:
            problems.append(f"-s {shown}: each parameter once: {key.strip()[:80]} is given as -s {given[key.strip()]} and "
                            f"again as -s {n} (the second would silently win); drop one")
            continue
        given[key.strip()] = n
        if not sep or not dot or not param or not stage or "." in param:
            problems.append(f"-s {shown}: expected STAGE.KEY=VALUE, e.g. -s audit.log_dir=/evidence/logs")
        elif is_secret_key(param) or looks_secret(text):
            problems.append(f"-s {shown}: secrets may not be passed as parameters (the value is hidden and was not stored)")
        elif stage not in stages:
            problems.append(f"-s {shown}: runbook {book.name} has no stage {stage[:60]!r} (stages: {', '.join(stages)})")
        elif param not in stages[stage].parameters:
            known = ", ".join(stages[stage].parameters) or "none"
            problems.append(f"-s {shown}: stage {stage} has no parameter {param[:60]!r} (parameters: {known})")
        elif why is not None:
            problems.append(f"-s {shown}: the value after '=' is not one YAML value ({why}); quote text, "
                            "e.g. -s 'audit.since=\"2h\"'")
        elif declared is not None and _kind(value) != _kind(declared) \
                and not (_kind(value) == "a whole number" and _kind(declared) == "a number"):
            want = _kind(declared)
            problems.append(f"-s {shown}: stage {stage}'s {param} is {want} (the runbook's default is "
                            f"{declared!r}), not {_kind(value)}"
                            + (f"; quote it to pass text: -s '{key.strip()[:60]}=\"{text[:40]}\"'" if want == "text" else ""))
        else:
            st = stages[stage]
            stages[stage] = Stage(st.name, st.notebook, {**st.parameters, param: value}, st.timeout)
    if problems:
        raise RunnerInputError("\n".join(problems))
    return Runbook(book.name, book.path, book.description, tuple(stages[s.name] for s in book.stages))


def _kind(value: Any) -> str:
    """What a stage parameter value is, in words (a -s value must be what the runbook declares)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__


def check_stage_inputs(book: Runbook, site) -> None:
    """Stage inputs that can be checked before anything runs: a folder of saved logs for the audit."""
    for st in book.stages:
        if st.parameters.get("since"):
            try:
                check_since(st.parameters["since"], f"-s {st.name}.since")
            except AuditInputError as exc:
                raise RunnerInputError(str(exc)) from None
        if st.parameters.get("log_dir"):
            try:
                check_logdir(st.parameters["log_dir"], site)
            except AuditInputError as exc:
                raise RunnerInputError(f"-s {st.name}.log_dir: {exc}") from None
