"""The `layernet` command. Each sub-command parses its arguments and calls one library function."""
from __future__ import annotations

import argparse
import os
import sys

from layernet.allowlist import effective_allowlist
from layernet.errors import InputError
from layernet.site import load_site
from layernet.site.problems import show_path
from layernet.site.secrets import redact

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _site_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", required=True, help="site file, e.g. params/lab.yaml")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a site field before validation, e.g. -p azure.location=westeurope")


def _load(args):
    return load_site(args.site, args.param)


def cmd_validate(args) -> int:
    site = _load(args)
    print(f"{args.site}: valid site '{site.name}' ({' -> '.join(l.name for l in site.chain)}, target {site.target})")
    return EXIT_OK


def cmd_allowlist(args) -> int:
    from layernet.table import print_table

    al = effective_allowlist(_load(args))
    print_table(al.rows(), ["host", "ports", "group", "purpose", "needed by"])
    for note in al.notes:
        print(f"note: {note}")
    print(f"{len(al.entries)} entries")
    return EXIT_OK


def cmd_firewall(args) -> int:
    from layernet.render import firewall_rows
    from layernet.table import print_table

    site = _load(args)
    print_table(firewall_rows(site, effective_allowlist(site)), ["level", "from", "to", "protocol", "ports", "purpose"])
    return EXIT_OK


def cmd_render(args) -> int:
    from layernet.render import render_site, write_artifacts

    from layernet.runfolder import check_out_dir

    from layernet.targets import target_class

    site = _load(args)        # by default what the site's target applies (a lab with clusters: the kube objects)
    arts = render_site(site, effective_allowlist(site), target=args.target or target_class(site).renders)
    out = check_out_dir(args.out)
    for art in arts:  # level names are DNS labels; this keeps any artifact path inside --out all the same
        dest = (out / art.level / art.name).resolve()
        if not dest.is_relative_to(out):
            raise InputError(f"render: artifact {art.level}/{art.name} would be written outside --out {args.out}")
    for path in write_artifacts(arts, out):
        print(path)
    return EXIT_OK


def cmd_lab(args) -> int:
    from layernet.lab import commands

    site = _load(args)
    if args.action == "up" and site.target != "lab":
        print(f"error: {args.site}: target: {site.target!r}; the lab builds only sites with target: lab, because it "
              "adds routes to the site's networks on this machine. To try this plan in the lab, copy the file and set "
              "target: lab (and a dns_upstream inside lab.cloud_network for the egress level).", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.action == "exec":
        argv = list(args.cmd or [])
        if not args.level or not argv:
            print("usage: layernet lab exec LEVEL --site FILE -- CMD ...", file=sys.stderr)
            return EXIT_BAD_INPUT
        return commands.exec_in(site, args.level, argv)
    if args.action == "up":
        rc = commands.cli_up(site)
        return _lab_proxies(site) if rc == 0 else rc
    return {"down": commands.cli_down, "status": commands.cli_status}[args.action](site)


def _lab_proxies(site) -> int:
    """Stage 01 on the clusters `lab up` built, as on a plant (the kube path): Envoy and coredns-custom."""
    import time

    from layernet.errors import LayernetError
    from layernet.lab import commands
    from layernet.targets.lab import LabTarget

    t0 = time.monotonic()
    try:
        steps = LabTarget(site).apply(commands.render_lab(site))
    except LayernetError as exc:
        print(f"error: stage 01 on the lab's clusters: {exc}", file=sys.stderr)
        return 1
    print(f"stage 01 on the lab's clusters: {sum(not s.skip for s in steps)} of {len(steps)} object(s) applied "
          f"in {time.monotonic() - t0:.2f} s (kubectl --kubeconfig {commands.state_dir(site) / 'kubeconfig'} ...)")
    return 0


def cmd_probe(args) -> int:
    from layernet.probe_run import run_matrix_cli

    return run_matrix_cli(_load(args))


def cmd_harden(args) -> int:
    from layernet.harden.report import cli

    from layernet.runfolder import check_out_dir

    site = _load(args)
    return cli(site, str(check_out_dir(args.out)) if args.out is not None else None)


def cmd_run(args) -> int:
    from layernet.runner.run import run_runbook
    from layernet.runner.runbook import RunnerInputError

    try:
        result = run_runbook(args.runbook, site_path=args.site, overrides=args.param, dry_run=args.dry_run,
                             resume=args.resume, out_dir=args.out, keep_lab=args.keep_lab,
                             stage_params=args.stage_param)
    except RunnerInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(result.index_path)
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_jupyter(args) -> int:
    from layernet.session import jupyter

    return jupyter(args.site, args.param, args.out, args.cmd or [])


def cmd_audit(args) -> int:
    from layernet.audit.cli import check_flags, pairs_from_args, read_fleet, run_audit_cli, run_fleet_cli
    from layernet.audit.collect import AuditInputError
    from layernet.runfolder import check_out_dir

    try:
        entries = read_fleet(args.fleet) if args.fleet else []
        pairs = pairs_from_args(getattr(args, "audit_seq", []))
        if args.fleet and pairs:
            raise AuditInputError(f"--fleet {args.fleet}: give either a fleet file or LOGDIR --site FILE pairs")
        check_flags(args.since, args.run, args.monitor_endpoint, sites=len(entries or pairs))
        if args.workspace:
            return _audit_workspace(args, entries, pairs)
        if not entries and not pairs:
            raise AuditInputError("give a log folder (LOGDIR [--site FILE], several as LOGDIR --site FILE pairs) "
                                  "or --fleet FILE")
        for e in entries or pairs:
            try:
                os.stat(e.logs)
            except FileNotFoundError:
                pass  # the audit says what a log folder must hold
            except OSError as exc:  # a name too long for the file system, a loop of links
                raise InputError(f"{show_path(e.logs)}: not a usable folder path ({exc.strerror or exc})") from None
        if args.out is not None:
            args.out = str(check_out_dir(args.out))
        if args.parquet is not None:
            args.parquet = str(check_out_dir(args.parquet, "--parquet"))
        if entries or len(pairs) > 1:
            return run_fleet_cli(entries or pairs, args.param, since=args.since, out=args.out, run=args.run,
                                 parquet=args.parquet)
        site = load_site(pairs[0].site_file, args.param) if pairs[0].site_file else None
        return run_audit_cli(pairs[0].logs, site=site, since=args.since, out=args.out,
                             run=args.run, parquet=args.parquet)
    except AuditInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _audit_workspace(args, entries, pairs) -> int:
    """`layernet audit --site FILE --workspace`: the site's Log Analytics workspace instead of a log folder."""
    from layernet.audit.cli import run_audit_cli
    from layernet.audit.collect import AuditInputError
    from layernet.runfolder import check_out_dir

    sites = [v for k, v in getattr(args, "audit_seq", []) if k == "site"]
    dirs = [v for k, v in getattr(args, "audit_seq", []) if k == "dir"]
    if entries or dirs or len(sites) != 1:
        raise AuditInputError("--workspace: give one site file (--site FILE) and no log folder or fleet file; the "
                              "records come from the site's monitor.workspace_id")
    site = load_site(sites[0], args.param)
    if site.monitor.workspace_id is None:
        raise AuditInputError(f"{sites[0]}: monitor.workspace_id is not set; give the Log Analytics workspace id "
                              "(a GUID) that Container Insights sends the proxy pods' logs to (-p "
                              "monitor.workspace_id=GUID)")
    if args.out is not None:
        args.out = str(check_out_dir(args.out))
    if args.parquet is not None:
        args.parquet = str(check_out_dir(args.parquet, "--parquet"))
    return run_audit_cli("", site=site, since=args.since, out=args.out, run=args.run, parquet=args.parquet,
                         workspace=True, endpoint=args.monitor_endpoint)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="layernet", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a runbook (runbooks/NAME.yaml) with papermill into runs/")
    p.add_argument("runbook", help="runbook name (deploy, audit) or path to a runbook YAML")
    p.add_argument("--site", required=False, help="site file, e.g. params/lab.yaml")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY.PATH=VALUE")
    p.add_argument("-s", "--stage-param", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="set a parameter the runbook declares for a stage, e.g. -s audit.log_dir=/evidence/logs")
    p.add_argument("--dry-run", action="store_true", help="plan only: stages show what they would change")
    p.add_argument("--resume", metavar="RUN_DIR", help="re-run from the first stage that did not pass")
    p.add_argument("--out", metavar="DIR", help="parent folder of run folders (default: runs/)")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab up after the run")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("jupyter", help="JupyterLab on notebooks/ as one run: the notebooks opened in it share one new "
                                       "run folder; a lab that is not up is brought up, and taken down at the end; "
                                       "arguments after -- go to `jupyter lab`")
    _site_args(p)
    p.add_argument("--out", metavar="DIR", help="parent folder of the session's run folder (default: runs/)")
    p.set_defaults(func=cmd_jupyter, cmd=None)

    p = sub.add_parser("validate", help="validate a site file and list every problem")
    _site_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("allowlist", help="print the site's effective allow list")
    _site_args(p)
    p.set_defaults(func=cmd_allowlist)

    p = sub.add_parser("firewall", help="print the IP allow list the routers between the levels must implement")
    _site_args(p)
    p.set_defaults(func=cmd_firewall)

    p = sub.add_parser("render", help="write every level's Envoy, DNS, manifests and firewall artifacts")
    _site_args(p)
    p.add_argument("--out", required=True, help="output folder (one sub-folder per level)")
    p.add_argument("--target", choices=["lab", "kube"], help="render for this target (default: what the site's target applies, the kube objects; lab: Envoy's and CoreDNS's own files, to run them as plain processes)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("lab", help="the local namespace lab: up, down, status, exec LEVEL -- CMD")
    p.add_argument("action", choices=["up", "down", "status", "exec"])
    p.add_argument("level", nargs="?", help="level name (for exec)")
    _site_args(p)
    p.set_defaults(func=cmd_lab, cmd=None)

    p = sub.add_parser("probe", help="run the probe matrix against the site's target and print the table")
    _site_args(p)
    p.set_defaults(func=cmd_probe)

    from layernet.audit.cli import LogDirs, SitePairs

    p = sub.add_parser("audit", help="audit a folder of saved proxy logs (<level>.log or <level>/envoy-access.log); "
                                     "a fleet: LOGDIR --site FILE pairs or --fleet FILE")
    p.add_argument("logdir", nargs="*", action=LogDirs, help="folder with one access log per proxy level")
    p.add_argument("--site", nargs="+", action=SitePairs, metavar="FILE",
                   help="site file of the log folder before it: adds allow-list entries, paths and anomalies")
    p.add_argument("--fleet", help="fleet file: a YAML list of {site: FILE, logs: DIR}")
    p.add_argument("--parquet", metavar="DIR", help="write the connections as one Parquet dataset partitioned by "
                                                    "site, level and day under DIR/connections/")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY.PATH=VALUE")
    p.add_argument("--since", default="", help="ISO 8601 time or a duration back from now (2h, 1d)")
    p.add_argument("--out", help="write connections.csv and connections.parquet under OUT/audit/")
    p.add_argument("--run", default="", help="run folder whose probe traffic is expected (default: the site's newest "
                                             "run with probes; 'none': no run)")
    p.add_argument("--workspace", action="store_true",
                   help="read the proxies' logs from the site's Log Analytics workspace (monitor.workspace_id; "
                        "Container Insights) instead of a folder; --since defaults to 1d")
    p.add_argument("--monitor-endpoint", metavar="URL",
                   help="the Logs query API to call (default: the site's cloud, e.g. https://api.loganalytics.io)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("harden", help="hardening evidence on a running lab: name differential, sources, isolation, DNS")
    _site_args(p)
    p.add_argument("--out", help="also write each table as CSV into this folder")
    p.set_defaults(func=cmd_harden)
    return ap


# jsonschema registers an IRI format check when rfc3987-syntax can be imported (JupyterLab's dependencies bring it),
# and importing it builds a grammar: about 3 s in every command that reads or writes a notebook (nbformat validates
# with jsonschema). No schema this tool validates against uses that format.
SKIPPED_IMPORTS = ("rfc3987_syntax",)


def main(argv: list[str] | None = None) -> int:
    for name in SKIPPED_IMPORTS:
        sys.modules.setdefault(name, None)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = None
    if "--" in argv:  # `layernet lab exec LEVEL --site FILE -- CMD ...`: everything after -- is the command
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if command is not None:
        args.cmd = command
    try:
        return args.func(args)
    except InputError as exc:  # SiteError included: the input is wrong, nothing was changed
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from layernet.lab import LabError
        from layernet.targets.kube import KubeError

        if isinstance(exc, (LabError, KubeError)):  # the target is not in a state to do this: say so, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        if os.environ.get("LAYERNET_DEBUG"):
            raise
        text = redact(str(exc).splitlines()[0] if str(exc) else "")[:300]
        print(f"error: unexpected {type(exc).__name__}: {text} (LAYERNET_DEBUG=1 shows where)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
