"""The images section against the validated site: `layernet.site.images.check` (references, levels, and images a
level cannot fetch through its allow list; stage plans call it too)."""
from __future__ import annotations

from layernet.site import images
from layernet.site.checks.doc import Doc
from layernet.site.problems import Problem


def check(doc: Doc) -> list[Problem]:
    return images.check(doc.site, doc.file)
