"""The ``probinfer`` command: ``probinfer bench`` validates every sampler on the model zoo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    return 2


if __name__ == "__main__":
    sys.exit(main())
