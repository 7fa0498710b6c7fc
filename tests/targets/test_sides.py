"""A site runs on three things, built once per notebook into one Context: its target (lifecycle and plan/apply/logs/
probe), its clusters' own side (a plant's real agents: nothing to do, a reader; the lab's stand-ins) and its Azure
side (where the Azure calls run). Stages are written once against the Context: they never ask for a target by kind,
never branch on an executor's name, and every notebook builds its Context exactly once."""
from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest

from layernet import context, targets
from layernet.site import load_site
from layernet.site.aio import Aio
from layernet.site.arc import Arc
from layernet.stages import aio, arc
from layernet.targets import AzureSide, Cluster, Target

ROOT = Path(__file__).resolve().parents[2]
STAGES = ROOT / "lib" / "layernet" / "stages"


def public(cls) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and callable(v)}


def test_the_target_is_its_lifecycle_and_plan_apply_logs_probe():
    assert public(Target) == {"plan", "apply", "logs", "probe",                       # where artifacts go
                              "requirements", "session_state", "take_down",          # its lifecycle
                              "probe_inputs", "context_label"}                       # what probes and preflight ask
    for kind, (cls, _, _) in targets.SIDES.items():
        extra = public(cls) - public(Target)
        # a target's own helpers are parts of its plan/apply/probe (the kube target's `api` is its client, which
        # a plant's cluster side reads through), never a stage hook
        assert not extra & (public(Cluster) - {"api"} | public(AzureSide)), (kind, extra)


@pytest.mark.parametrize("kind", sorted(targets.SIDES))
def test_every_kind_gives_a_target_a_cluster_side_and_an_azure_side(kind):
    site = load_site(ROOT / "params" / ("lab.yaml" if kind == "lab" else "site-example.yaml"))
    assert site.target == kind
    ctx = context.build(site)
    assert isinstance(ctx.target, Target) and isinstance(ctx.cluster, Cluster) and isinstance(ctx.azure, AzureSide)
    assert ctx.site is site and ctx.target.site is site and ctx.cluster.site is site and ctx.azure.site is site
    assert [e.host for e in ctx.allowlist.entries]
    assert context.of(ctx) is ctx and context.site_of(ctx) is site and context.site_of(site) is site
    # each side answers only what its base declares: a stage never needs to know which kind it runs on
    for side, base in ((ctx.cluster, Cluster), (ctx.azure, AzureSide)):
        assert public(type(side)) <= public(base) | {"reader"}, (kind, public(type(side)) - public(base))
    if kind == "kube":
        assert type(ctx.cluster) is Cluster and type(ctx.azure) is AzureSide      # a plant: the real things
        assert ctx.cluster.reader == ctx.target.api                               # a reader of its clusters
        assert ctx.cluster.install_arc_agents("level4", "/x") == "" and not ctx.azure.elsewhere
    else:   # the lab reads its clusters as a plant's (stage 03's pods and Services)
        assert ctx.azure.elsewhere and ctx.cluster.reader is not None and ctx.cluster.makes_x509_objects


def test_a_given_target_is_the_one_the_context_holds():
    site = load_site(ROOT / "params" / "site-example.yaml")
    mine = targets.get_target(site)
    ctx = context.build(site, mine)
    assert ctx.target is mine and ctx.cluster.reader == mine.api


def _code(path: Path) -> str:
    """The module's code without its docstrings and comments."""
    text = re.sub(r'"""[\s\S]*?"""', "", path.read_text())
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_stages_never_branch_on_an_executor_or_ask_for_a_target_by_kind():
    for path in sorted((ROOT / "lib" / "layernet").rglob("*.py")):     # nothing branches on an executor's name
        assert not re.search(r"executor\s*[!=]=", _code(path)), f"{path.name}: branches on an executor's name"
    for path in sorted(STAGES.glob("*.py")):
        code = _code(path)
        assert "get_target(" not in code, f"{path.name}: asks for a target instead of using the Context"
        assert not re.search(r"(target|tgt)\.kind\s*[!=]=|site\.target\s*[!=]=", code), \
            f"{path.name}: branches on the target kind"


def _literal_values(model, field: str) -> set[str]:
    return set(typing.get_args(model.model_fields[field].annotation))


@pytest.mark.parametrize("module,model", [(arc, Arc), (aio, Aio)])
def test_each_stage_has_one_executor_per_site_value_with_one_protocol(module, model):
    assert set(module.EXECUTORS) == _literal_values(model, "executor")
    if module is arc:                           # and what each executor's steps run, one renderer per executor
        from layernet.azure.arc import REQUESTS

        assert set(REQUESTS) == set(module.EXECUTORS) and len({frozenset(public(c)) for c in REQUESTS.values()}) == 1
    protocols = {frozenset(public(type(way))) for way in module.EXECUTORS.values()}
    assert len(protocols) == 1, protocols
    with pytest.raises(Exception, match="executor"):
        module.way("kubectl")


def test_every_notebook_builds_its_context_once_and_passes_it():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"][1:]
        code = "\n".join(cells)
        assert code.count("open_context(") == 1, nb.name
        assert "open_site(" not in code and "get_target(" not in code, nb.name
        assert not re.search(r"\(site\b", code), f"{nb.name}: a stage call given the site instead of the Context"


def _a_stage_call(site, arm, plan, note: str, timeout: float):
    """A stage function as `elsewhere` calls it: the Context, the Azure side's Arm, JSON arguments, a Plan."""
    from layernet.plan import Plan, Step

    assert isinstance(site, context.Context) and arm == "the azure side's arm" and isinstance(plan, Plan)
    assert timeout == 0.5             # an argument named like one of the call's own reaches the stage function
    return Plan(plan.stage, plan.steps + [Step(site.site.name, note, "x")], observed=plan.observed)


def test_a_stage_call_goes_where_the_azure_calls_run_and_plans_travel_as_json(monkeypatch):
    from layernet.plan import Plan, Step
    from layernet.context import elsewhere, runs_here

    site = load_site(ROOT / "params" / "site-example.yaml")
    ctx = context.build(site)
    monkeypatch.setattr(AzureSide, "arm", lambda self: "the azure side's arm")
    sent = []
    real_call = AzureSide.call
    monkeypatch.setattr(AzureSide, "call", lambda self, func, progress=None, timeout=900.0, **kw: (
        sent.append((func, timeout, json.dumps(kw))), real_call(self, func, progress, **kw))[1])
    out = elsewhere(ctx, _a_stage_call, plan=Plan("arc", [Step("l4", "a", "t")], observed="abc"), note="done there",
                    timeout=0.5)
    assert isinstance(out, Plan) and [s.action for s in out.steps] == ["a", "done there"] and out.observed == "abc"
    assert sent and sent[0][:2] == ("layernet.context:_there", 900.0)   # JSON all the way; the call's own
    # timeout (the lab's jump box has one) is left alone
    assert not runs_here(None, None, {}) and runs_here(None, "an arm") and runs_here({"sleep": 1})
