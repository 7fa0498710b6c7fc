"""One verdict for an audit, shared by `layernet audit` and the audit stage, so both pass or fail together.

An audit fails (exit 1) when a line could not be read as an access-log record or when an anomaly is neither
expected (the run's own probe traffic) nor informational. Bad input (a missing or empty folder, unreadable
files, a proxy level without any record) is an `AuditInputError` before any verdict (exit 2).
"""
from __future__ import annotations

from dataclasses import dataclass

EXIT_OK, EXIT_FINDINGS = 0, 1


@dataclass
class Verdict:
    code: int
    malformed: int
    problems: int
    expected: int
    info: int

    @property
    def passed(self) -> bool:
        return self.code == EXIT_OK

    def text(self) -> str:
        parts = [f"{self.malformed} malformed line(s)", f"{self.problems} anomaly group(s)"]
        if self.expected:
            parts.append(f"{self.expected} group(s) of the run's probe traffic marked expected")
        if self.info:
            parts.append(f"{self.info} informational group(s)")
        return ("audit passed: " if self.passed else "audit FAILED: ") + ", ".join(parts)


def verdict(parsed, anomalies) -> Verdict:
    from layernet.audit.findings import INFO_KINDS, problems

    prob = problems(anomalies)
    expected = int(anomalies["expected"].sum()) if len(anomalies) else 0
    info = int((~anomalies["expected"] & anomalies["kind"].isin(INFO_KINDS)).sum()) if len(anomalies) else 0
    bad = int(len(parsed.malformed))
    code = EXIT_FINDINGS if bad or len(prob) else EXIT_OK
    return Verdict(code, bad, int(len(prob)), expected, info)
