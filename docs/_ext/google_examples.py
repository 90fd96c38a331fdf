"""A griffe extension for the API pages (mkdocs.yml), which reads masterkey's docstrings as they are written:

- they title their doctests ``Example:``, which griffe's Google parser reads as an admonition of Markdown text; read
  as ``Examples:``, the ``>>>`` lines become code;
- they name code objects with Sphinx roles (``:func:`parse_args```, ``:class:`~masterkey.FilterBank```), which
  Markdown does not know; they become code spans (``~`` keeps the last component, as in Sphinx).
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|data|mod|meth|attr|exc|obj|const):`(~?)\.?([^`]+)`")


def _code(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"``{target.rsplit('.', 1)[-1] if tilde else target}``"


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code, _EXAMPLE.sub(r"\1Examples:", obj.docstring.value))
