"""Build hook: copy the runbooks, notebooks and site files into the package (layernet/bundled/), so a regular
install can run `layernet run` without the source checkout. Everything else is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLE = {"runbooks": "*.yaml", "notebooks": "*.ipynb", "params": "*.yaml"}


class BuildWithBundle(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return                                   # an editable install reads the checkout's folders
        target = Path(self.build_lib) / "layernet" / "bundled"
        for name, pattern in BUNDLE.items():
            (target / name).mkdir(parents=True, exist_ok=True)
            for src in sorted((HERE / name).glob(pattern)):
                shutil.copy2(src, target / name / src.name)


setup(cmdclass={"build_py": BuildWithBundle})
