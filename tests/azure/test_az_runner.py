"""The command runner: exact argv, outputs recorded in the run folder, the transient-failure table, the secret
guard and a missing tool. Commands are the fake az of tests/doubles."""
from __future__ import annotations


import pytest
from fakecli import FakeCli

from layernet.azure.runner import CommandFailed, Runner, az_json, check_argv, secret_in, transient_reason  # noqa: E402
from layernet.errors import InputError  # noqa: E402


@pytest.mark.parametrize("text,why", [
    ("ERROR: (TooManyRequests) 429 Client Error", "throttled by ARM (429)"),
    ("The operation timed out", "a request timed out"),
    ("requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='management.azure.com')", "a request timed out"),
    ("argument --onboarding-timeout: invalid int value: 'x'", None),
    ("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))", "connection reset"),
    ("503 Service Unavailable", "ARM returned 502/503/504"),
    ("(AnotherOperationInProgress) Another operation is in progress", "another operation on the resource is in progress"),
    ("(AuthorizationFailed) The client does not have authorization", None),
    ("(InvalidTemplate) Deployment template validation failed", None),
])
def test_transient_table(text, why):
    assert transient_reason(text) == why


@pytest.mark.parametrize("argv", [
    ["az", "login", "--service-principal", "-u", "app", "-p", "Zq9secretvalue"],
    ["az", "login", "--password=Zq9secretvalue"],
    ["az", "storage", "container", "create", "--account-key", "abc"],
    ["az", "x", "--value", "Endpoint=sb://n.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b"],
    ["az", "x", "--value", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig"],
    ["az", "x", "--body", "client_secret=abc"],
])
def test_secret_looking_arguments_are_refused_without_echoing_them(argv):
    assert secret_in(argv)
    with pytest.raises(InputError) as info:
        check_argv(argv)
    secret = argv[-1].split("=", 1)[-1] if argv[-1].startswith("--") else argv[-1]
    assert secret not in str(info.value)


def test_ordinary_commands_pass_the_guard():
    assert secret_in(["az", "connectedk8s", "connect", "-n", "c", "-g", "rg", "--custom-locations-oid",
                      "51dfe1e8-70c6-4de5-a08e-e18aff23d815"]) is None
    assert secret_in(["kubectl", "get", "pods", "-n", "azure-arc"]) is None


def test_runner_records_each_command_and_retries(tmp_path, monkeypatch):
    cli = FakeCli(tmp_path, monkeypatch)
    cli.on("az", "group", "create", rc=1, stderr="502 Bad Gateway", times=1)
    cli.on("az", "group", "create", stdout='{"name": "rg"}')
    naps: list[float] = []
    r = Runner(record_dir=tmp_path / "rec", sleep=naps.append, backoff=1.5)
    res = r.run(["az", "group", "create", "-l", "eastus", "-g", "rg"], name="level4 group")
    assert res.ok and res.attempts == 2 and res.json() == {"name": "rg"}
    assert naps == [1.5]
    assert cli.calls("az") == [["group", "create", "-l", "eastus", "-g", "rg"]] * 2
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert files == ["01-level4-group.cmd", "01-level4-group.err", "01-level4-group.out", "01-level4-group.rc"]
    assert (tmp_path / "rec" / "01-level4-group.rc").read_text() == "0\nretried for: ARM returned 502/503/504\n"
    assert (tmp_path / "rec" / "01-level4-group.out").read_text() == '{"name": "rg"}\n'


def test_retries_stop_after_the_attempts(tmp_path, monkeypatch):
    cli = FakeCli(tmp_path, monkeypatch)
    cli.on("az", "group", "create", rc=1, stderr="429 Too Many Requests")
    res = Runner(attempts=3, sleep=lambda s: None).run(["az", "group", "create"])
    assert not res.ok and res.attempts == 3 and len(cli.calls("az")) == 3


def test_az_json_missing_is_none_other_failures_raise(tmp_path, monkeypatch):
    cli = FakeCli(tmp_path, monkeypatch)
    cli.on("az", "connectedk8s", "show", "-n", "a", rc=3, stderr="(ResourceNotFound) was not found")
    cli.on("az", "connectedk8s", "show", "-n", "b", rc=1, stderr="(AuthorizationFailed) no")
    r = Runner(sleep=lambda s: None)
    assert az_json(r, ["az", "connectedk8s", "show", "-n", "a"]) is None
    assert cli.calls("az")[0][-2:] == ["-o", "json"]
    with pytest.raises(CommandFailed, match="AuthorizationFailed"):
        az_json(r, ["az", "connectedk8s", "show", "-n", "b"])


def test_a_missing_tool_is_exit_127_with_a_sentence(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    res = Runner().run(["az", "version"])
    assert res.rc == 127 and "command not found on this machine" in res.stderr


def test_echo_streams_each_output_line_and_still_captures(tmp_path, monkeypatch):
    cli = FakeCli(tmp_path, monkeypatch)
    cli.on("az", "connectedk8s", "connect", stdout='{"id": "c"}', stderr="Step: checking\nStep: installing agents\n")
    lines: list[str] = []
    res = Runner(record_dir=tmp_path / "rec").run(["az", "connectedk8s", "connect"], echo=lines.append)
    assert sorted(lines) == sorted(['{"id": "c"}', "Step: checking", "Step: installing agents"])
    assert res.ok and res.json() == {"id": "c"} and res.stderr == "Step: checking\nStep: installing agents\n"
    assert (tmp_path / "rec" / "01-az-connectedk8s-connect.err").read_text() == res.stderr


def test_echo_reports_a_retry(tmp_path, monkeypatch):
    cli = FakeCli(tmp_path, monkeypatch)
    cli.on("az", "group", "create", rc=1, stderr="429 Too Many Requests\n", times=1)
    cli.on("az", "group", "create", stdout="{}")
    lines: list[str] = []
    res = Runner(sleep=lambda s: None, backoff=5).run(["az", "group", "create"], echo=lines.append)
    assert res.ok and "throttled by ARM (429): attempt 2 of 3 in 5 s" in lines
