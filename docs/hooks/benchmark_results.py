"""mkdocs hook: publish ``benchmarks/results/`` with the site.

The guide links to result tables and charts as ``../benchmarks/results/...`` (paths that
work when reading the markdown in the repository). The site gets the same files under
``results/`` (each table a page, each chart an image), and those links are rewritten to
point there, so one set of committed results serves both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PUBLISHED_SUFFIXES = {".md", ".png", ".json"}


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """Add every result table, chart and JSON file under ``results/``."""
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and path.suffix in PUBLISHED_SUFFIXES:
            relative = path.relative_to(RESULTS).as_posix()
            files.append(File.generated(config, f"results/{relative}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Point the repository-relative result links at the published copies."""
    return markdown.replace("](../benchmarks/results/", "](results/")
