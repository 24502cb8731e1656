"""The ``probinfer`` command.

- ``probinfer bench``: every sampler on every zoo model, checked against the references.
- ``probinfer sample MODEL_FILE --data DATA.json``: sample one NumPyro model, save NetCDF.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console


def _bench(arguments: argparse.Namespace, console: Console) -> int:
    import models
    from probinfer.bench import METHODS, markdown_table, run_bench

    model_names = arguments.models or models.names()
    unknown = sorted(set(model_names) - set(models.names()))
    if unknown:
        console.print(f"[red]unknown model(s) {unknown}; choose from {models.names()}")
        return 2
    methods = arguments.methods or list(METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        console.print(f"[red]unknown method(s) {unknown}; choose from {list(METHODS)}")
        return 2
    console.print(
        f"probinfer bench: {len(model_names)} models x {len(methods)} methods, "
        f"{arguments.chains} chains, {arguments.warmup} warm-up, {arguments.draws} draws"
    )
    rows = run_bench(
        model_names,
        methods,
        chains=arguments.chains,
        warmup=arguments.warmup,
        draws=arguments.draws,
        seed=arguments.seed,
        out=Path(arguments.out),
        echo=lambda line: console.print(line, soft_wrap=True),
    )
    console.print(markdown_table(rows), markup=False, soft_wrap=True)
    console.print(f"wrote {arguments.out}/bench.json, bench.md, bench.png")
    failed = [f"{r['model']}/{r['method']}" for r in rows if not r["passed"]]
    if failed:
        console.print(f"[yellow]not within tolerance of the reference: {failed}")
    return 0


def load_model(path: Path, name: str) -> Any:
    """Import ``name`` from the Python file ``path``.

    Args:
        path: a Python file defining a NumPyro model function.
        name: the function's name in that file.

    Returns:
        The model function.

    Raises:
        ValueError: if the file does not exist or does not define ``name``.
    """
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, name, None)):
        raise ValueError(f"{path} defines no function `{name}`; pass `--model-name`.")
    return getattr(module, name)


def load_data(path: Path | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Read model arguments from JSON: ``{"args": [...], "kwargs": {...}}`` or a plain dict.

    Lists of numbers become float arrays; integers, strings and null stay as they are
    (sizes and switches).

    Args:
        path: the JSON file, or None for no arguments.

    Returns:
        ``(args, kwargs)``.

    Raises:
        ValueError: if the JSON is neither shape.
    """
    import numpy as np

    if path is None:
        return (), {}
    content = json.loads(path.read_text())

    def convert(value: Any) -> Any:
        if isinstance(value, list):
            return np.asarray(value, dtype=float)
        if isinstance(value, float):
            return np.asarray(value)
        return value

    if isinstance(content, dict) and set(content) <= {"args", "kwargs"} and content:
        args = tuple(convert(v) for v in content.get("args", []))
        kwargs = {k: convert(v) for k, v in content.get("kwargs", {}).items()}
        return args, kwargs
    if isinstance(content, dict):
        return (), {k: convert(v) for k, v in content.items()}
    raise ValueError(
        f'{path} must hold a JSON object: keyword arguments, or {{"args": [...], '
        '"kwargs": {...}}.'
    )


def _sample(arguments: argparse.Namespace, console: Console) -> int:
    import probinfer as pi

    try:
        model = load_model(Path(arguments.model_file), arguments.model_name)
        args, kwargs = load_data(None if arguments.data is None else Path(arguments.data))
    except ValueError as error:
        console.print(f"[red]{error}", soft_wrap=True)
        return 2
    idata = pi.sample(
        model,
        *args,
        method=arguments.method,
        chains=arguments.chains,
        warmup=arguments.warmup,
        draws=arguments.draws,
        seed=arguments.seed,
        progress=not arguments.quiet,
        **kwargs,
    )
    console.print(pi.summary(idata).to_string(), markup=False, soft_wrap=True)
    out = Path(arguments.out)
    idata.to_netcdf(str(out))
    console.print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``probinfer`` command.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(prog="probinfer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser(
        "bench", help="run every sampler on every zoo model and check against the references"
    )
    bench.add_argument("--models", nargs="+", help="zoo models (default: all)")
    bench.add_argument("--methods", nargs="+", help="methods (default: nuts hmc mala rwm)")
    bench.add_argument("--chains", type=int, default=4)
    bench.add_argument("--warmup", type=int, default=1000)
    bench.add_argument("--draws", type=int, default=1000)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", default="bench-results", help="output folder")

    sample = commands.add_parser("sample", help="sample one NumPyro model and save NetCDF")
    sample.add_argument("model_file", help="Python file defining the NumPyro model")
    sample.add_argument("--model-name", default="model", help="function name (default: model)")
    sample.add_argument(
        "--data", help='JSON: keyword arguments, or {"args": [...], "kwargs": {...}}'
    )
    sample.add_argument("--method", default="nuts", choices=["nuts", "hmc", "mala", "rwm"])
    sample.add_argument("--chains", type=int, default=4)
    sample.add_argument("--warmup", type=int, default=1000)
    sample.add_argument("--draws", type=int, default=1000)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default="posterior.nc", help="NetCDF file to write")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probinfer`` command.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    arguments = build_parser().parse_args(argv)
    console = Console()
    if arguments.command == "bench":
        return _bench(arguments, console)
    return _sample(arguments, console)


if __name__ == "__main__":
    sys.exit(main())
