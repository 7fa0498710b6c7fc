"""A lab service: a process of the lab with its name (`<level>/<service>`), namespace, config, argv, log and ready
check. lab/registry.py declares the site's services from it, lab/clusters/controlplane.py the clusters'."""
from __future__ import annotations

from pathlib import Path

from layernet.lab import layout, procs


class Service:
    short = ""                       # "envoy", "coredns", ...
    config_name = ""

    def __init__(self, site, where: str):
        self.site, self.where = site, where

    @property
    def name(self) -> str:
        return f"{self.where}/{self.short}"

    @property
    def folder(self) -> Path:
        return layout.state_dir(self.site) / "cloud" if self.where == "cloud" else layout.level_dir(self.site, self.where)

    @property
    def ns(self) -> str:
        return layout.namespace(self.site, self.where)

    @property
    def config(self) -> Path:
        return self.folder / self.config_name

    @property
    def log(self) -> Path:
        return self.folder / f"{self.short}.out"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self, p: procs.Proc) -> bool:
        return True

    def spec(self) -> tuple[str, str, list[str], Path]:
        return self.name, self.ns, self.argv(), self.log
