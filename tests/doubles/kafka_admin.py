"""A stand-in for confluent_kafka's AdminClient with the ACL calls layernet.lab.eventhubs_rbac makes (create_acls,
delete_acls, describe_acls), for tests without a broker. It refuses what the real client refuses before it sends
anything (an empty list, an item of another type, the same binding twice: ValueError with the real message;
tests/lab/test_eventhubs_identity_unit.py checks both refuse alike), answers as it does (a dict of futures keyed
by each binding or filter; describe a future of the bindings), and holds the ACLs it was given, so a filter
deletes and describes what it matches as the broker's does. The real broker is exercised by the lab tests."""
from __future__ import annotations

import concurrent.futures


def _done(result) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()
    fut.set_result(result)
    return fut


def _check(items, kind: type) -> None:
    if not isinstance(items, list) or not items:
        raise ValueError(f"Expected non-empty list of {kind.__name__} objects")
    for item in items:
        if not isinstance(item, kind):
            raise ValueError(f"Expected list of {kind!r}")
    if len(set(items)) != len(items):
        raise ValueError("duplicate ACL bindings not allowed" if kind.__name__ == "AclBinding"
                         else "duplicate ACL binding filters not allowed")


def _matches(flt, b) -> bool:
    """An AclBindingFilter matches a binding: strings equal or None, enums equal or ANY."""
    for attr in ("restype", "name", "resource_pattern_type", "principal", "host", "operation", "permission_type"):
        want = getattr(flt, attr)
        if want is None or getattr(want, "name", None) == "ANY":
            continue
        if want != getattr(b, attr):
            return False
    return True


class AdminDouble:
    def __init__(self, bindings=()):
        self.bindings: list = list(bindings)
        self.created: list = []
        self.deleted: list = []

    def create_acls(self, acls, request_timeout: float = 10.0):
        from confluent_kafka.admin import AclBinding

        _check(acls, AclBinding)
        for b in acls:
            if b not in self.bindings:
                self.bindings.append(b)
        self.created += acls
        return {b: _done(None) for b in acls}

    def delete_acls(self, filters, request_timeout: float = 10.0):
        from confluent_kafka.admin import AclBindingFilter

        _check(filters, AclBindingFilter)
        out = {}
        for flt in filters:
            gone = [b for b in self.bindings if _matches(flt, b)]
            self.bindings = [b for b in self.bindings if b not in gone]
            out[flt] = _done(gone)
        self.deleted += filters
        return out

    def describe_acls(self, flt, request_timeout: float = 10.0):
        from confluent_kafka.admin import AclBindingFilter

        if not isinstance(flt, AclBindingFilter):
            raise TypeError("Expected an AclBindingFilter object")
        return _done([b for b in self.bindings if _matches(flt, b)])
