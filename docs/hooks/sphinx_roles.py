"""mkdocs hook: drop Sphinx cross-reference roles from the rendered API reference.

Docstrings mark names the Sphinx way (``:func:`compose```), which mkdocstrings renders as
the literal text ``:func:`` before the code span; the code span alone reads right.
"""

from __future__ import annotations

import re
from typing import Any

ROLE_BEFORE_CODE = re.compile(r":(?:func|class|data|meth|attr|mod|exc|obj):(?=<code)")


def on_page_content(html: str, **kwargs: Any) -> str:
    """Remove each role prefix that stands before a code span."""
    return ROLE_BEFORE_CODE.sub("", html)
