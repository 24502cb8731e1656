"""mkdocs hook: run every example of the documentation at build time and show its output.

- A page's `` ```python `` blocks run in order in one namespace (as a reader pastes them
  into one session). What a block prints, the value of its last line when that line is an
  expression (as in a notebook; a trailing ``;`` hides it), and any warning it raises are
  shown below it; every matplotlib figure it leaves open is shown as an image, then closed.
- `` ```console `` blocks: each ``$ command`` line runs in a shell; the output is shown
  below it. The environment's ``bin`` folder (with the installed ``probinfer`` command)
  leads the ``PATH`` for both kinds of block.
- `` ```py `` and `` ```bash `` blocks are shown, not run (a multi-host launch that needs a
  cluster, a command on the reader's own files): the text beside them says why.
- An example that raises, or a command that exits with a non-zero status, fails the build
  with the page, the block's number and the traceback or output.
- An example that takes more than ``SLOW_EXAMPLE_SECONDS`` says how long it took.

``PROBINFER_DOCS_SKIP_EXAMPLES=1 mkdocs serve`` previews the pages without running them
(``make docs`` and the slow test never set it).

Each page runs in a fresh temporary working directory (examples may write checkpoints and
data files, which the page's console blocks can then use), with matplotlib's Agg backend.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import io
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.execute_examples")

# A fence at the start of a line; indented fences (inside list items) are not examples.
FENCE = re.compile(r"^```(python|console)\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
COMMAND_TIMEOUT_SECONDS = 600
FIGURE_DPI = 80
OUTPUT_COLUMNS = 110
# An example slower than this says how long it took when the pages were built, so that a
# reader knows what to expect before running it.
SLOW_EXAMPLE_SECONDS = 5.0


def on_config(config: Any, **kwargs: Any) -> Any:
    """Put the running environment's scripts (``probinfer``) first on the ``PATH``, and give
    printed tables and progress bars the width of the page's output blocks."""
    os.environ["COLUMNS"] = str(OUTPUT_COLUMNS)
    scripts = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != scripts:
        os.environ["PATH"] = f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"
    return config


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Run the page's examples and insert their output after each block."""
    if FENCE.search(markdown) is None or os.environ.get("PROBINFER_DOCS_SKIP_EXAMPLES") == "1":
        return markdown
    import matplotlib

    matplotlib.use("Agg")
    source = page.file.src_uri
    namespace: dict[str, Any] = {"__name__": "__main__"}
    pieces: list[str] = []
    position = 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir, contextlib.chdir(workdir):
        for number, match in enumerate(FENCE.finditer(markdown), start=1):
            pieces.append(markdown[position : match.end()])
            position = match.end()
            language, code = match.groups()
            where = f"docs/{source}, example {number}"
            block_start = time.perf_counter()
            if language == "python":
                output, images = _run_python(code, namespace, where)
            else:
                output, images = _run_console(code, where, workdir), []
            pieces.append(_render(output, images, time.perf_counter() - block_start))
    pieces.append(markdown[position:])
    log.info(f"ran the examples of docs/{source} in {time.perf_counter() - start:.1f} s")
    return "".join(pieces)


def _run_python(code: str, namespace: dict[str, Any], where: str) -> tuple[str, list[str]]:
    """Execute one block; return what it printed (and its last value) and its figures."""
    import matplotlib.pyplot as plt

    tree = ast.parse(code, filename=where)
    last_expression = None
    # A trailing semicolon hides the last value, as in a notebook (plots return axes).
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
        last_expression = ast.Expression(tree.body.pop().value)
    printed = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(printed),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            exec(compile(tree, where, "exec"), namespace)
            if last_expression is not None:
                value = eval(compile(last_expression, where, "eval"), namespace)
                if value is not None:
                    print(value.to_string() if hasattr(value, "to_string") else repr(value))
    except Exception as error:
        plt.close("all")
        raise PluginError(
            f"{where} failed:\n{traceback.format_exc()}\nits output so far:\n{printed.getvalue()}"
        ) from error
    lines = [printed.getvalue().rstrip()]
    lines += [f"{w.category.__name__}: {w.message}" for w in caught if _shown(w)]
    images = []
    for figure_number in plt.get_fignums():
        buffer = io.BytesIO()
        plt.figure(figure_number).savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
        images.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    plt.close("all")
    return "\n".join(line for line in lines if line), images


def _shown(caught: warnings.WarningMessage) -> bool:
    """Show the warnings a user of the example would see; not third-party deprecations."""
    return not issubclass(caught.category, DeprecationWarning | PendingDeprecationWarning)


def _run_console(code: str, where: str, workdir: str) -> str:
    """Run each ``$ command`` line of a console block; return the transcript's output."""
    environment = dict(os.environ, TERM="dumb")
    outputs = []
    for line in code.splitlines():
        if not line.startswith("$ "):
            continue
        command = line[2:]
        completed = subprocess.run(
            command,
            shell=True,
            cwd=workdir,
            env=environment,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
        output = (completed.stdout + completed.stderr).rstrip()
        if completed.returncode != 0:
            raise PluginError(
                f"{where}: `{command}` exited with status {completed.returncode}:\n{output}"
            )
        outputs.append(output)
    return "\n".join(output for output in outputs if output)


def _render(output: str, images: list[str], seconds: float) -> str:
    """Markdown for an example's output (a titled text block), its figures, and its run
    time when it was slow."""
    parts = []
    if seconds >= SLOW_EXAMPLE_SECONDS:
        parts.append(
            f"\n*This example took {seconds:.0f} s when these pages were built "
            f"({os.cpu_count()} CPU cores, compilation included).*\n"
        )
    if output:
        fence = "````" if "```" in output else "```"
        parts.append(f'\n{fence}text title="Output"\n{output}\n{fence}\n')
    parts += [f"\n![figure](data:image/png;base64,{image})\n" for image in images]
    return "".join(parts)
