"""The ``probinfer`` command.

- ``probinfer bench``: every sampler on every zoo model, checked against the references.
- ``probinfer sample MODEL_FILE --data DATA.json``: sample one NumPyro model, save NetCDF.
- ``probinfer pfn train --config CONFIG.json --out DIR``: train (or resume) a PFN.
- ``probinfer pfn predict --data DATA.json [--model DIR]``: a PFN's posterior predictive
  (default model: the pretrained GP PFN shipped with the package).
- ``probinfer dt train --config CONFIG.json --out DIR``: train (or resume) a distribution
  transformer.
- ``probinfer dt posterior --data DATA.json [--model DIR]``: a Gaussian-mixture prior plus
  linear-Gaussian data to the transformer's posterior mixture (default model: the shipped
  2-d one).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape


def _bench(arguments: argparse.Namespace, console: Console) -> int:
    import models
    from probinfer.bench import METHODS, markdown_table, run_bench

    model_names = arguments.models or models.names()
    unknown = sorted(set(model_names) - set(models.names()))
    if unknown:
        console.print(f"[red]unknown model(s) {unknown}; choose from {models.names()}")
        return 2
    methods: list[str] = arguments.methods or list(METHODS)
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
    written = ", ".join(path.name for path in sorted(Path(arguments.out).glob("bench.*")))
    console.print(f"wrote {written} in {arguments.out}")
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
        ValueError: if the file does not exist, is not a Python file, or does not define
            ``name``.
    """
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} is not a Python file; pass a .py file defining the model.")
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


def _read_training_config(
    path: str, build: Callable[[dict], Any], expected: str, console: Console
) -> Any:
    """``build(config)`` of the JSON training config at ``path``; ``None`` (reported) if bad."""
    try:
        return build(json.loads(Path(path).read_text()))
    except (OSError, KeyError, TypeError, ValueError) as error:
        console.print(f"[red]bad config {path}: {error}. Expected {expected}.", soft_wrap=True)
        return None


def _pfn_train(arguments: argparse.Namespace, console: Console) -> int:
    from probinfer import amortize

    built = _read_training_config(
        arguments.config,
        lambda config: (
            config["prior"],
            amortize.prior_from_spec(config["prior"]),
            amortize.TrainingConfig(**config.get("training", {})),
        ),
        '{"prior": {"type": "gp", ...}, "training": {"num_steps": ..., ...}}',
        console,
    )
    if built is None:
        return 2
    prior_spec, prior, training = built
    try:
        _, losses = amortize.train(
            prior,
            training,
            checkpoint_dir=arguments.out,
            prior_spec=prior_spec,
            progress=not arguments.quiet,
            init_from=arguments.init_from,
        )
    except (OSError, ValueError) as error:
        console.print(f"[red]{error}", soft_wrap=True)
        return 2
    if losses.size:
        console.print(f"final loss (mean of last 100 steps): {losses[-100:].mean():.4f}")
    console.print(f"model in {arguments.out}")
    return 0


def _pfn_predict(arguments: argparse.Namespace, console: Console) -> int:
    import numpy as np

    from probinfer import amortize

    try:
        model = amortize.load(arguments.model or amortize.PRETRAINED_GP)
        data = json.loads(Path(arguments.data).read_text())
        predictive = amortize.predict(
            model, np.asarray(data["x_train"]), np.asarray(data["y_train"]),
            np.asarray(data["x_test"]),
        )  # fmt: skip
    except (OSError, KeyError, ValueError) as error:
        console.print(f"[red]{error}", soft_wrap=True)
        return 2
    result = {
        "mean": predictive.mean.tolist(),
        "stddev": predictive.stddev.tolist(),
        "quantiles": {str(q): predictive.quantile(q).tolist() for q in (0.05, 0.5, 0.95)},
    }
    if "y_test" in data:
        y_test = np.asarray(data["y_test"], dtype=float)
        if y_test.shape != predictive.mean.shape:
            console.print(
                f"[red]`y_test` has shape {y_test.shape} but `x_test` has "
                f"{predictive.mean.shape[0]} points; pass one target per test input.",
                soft_wrap=True,
            )
            return 2
        log_prob = predictive.log_prob(y_test)
        result["log_prob"] = log_prob.tolist()
        console.print(f"mean test log density: {float(log_prob.mean()):.4f}")
    text = json.dumps(result, indent=2)
    if arguments.out:
        Path(arguments.out).write_text(text)
        console.print(f"wrote {arguments.out}")
    else:
        console.print(text, markup=False, soft_wrap=True)
    return 0


def _dt_train(arguments: argparse.Namespace, console: Console) -> int:
    from probinfer import amortize

    built = _read_training_config(
        arguments.config,
        lambda config: (
            amortize.task_from_spec(config["task"]),
            amortize.DTTrainingConfig(**config.get("training", {})),
        ),
        '{"task": {"type": "linear_gaussian", "dim": ...}, "training": {...}}',
        console,
    )
    if built is None:
        return 2
    task, training = built
    _, losses = amortize.train_dt(
        task, training, checkpoint_dir=arguments.out, progress=not arguments.quiet
    )
    if losses.size:
        console.print(f"final loss (mean of last 100 steps): {losses[-100:].mean():.4f}")
    console.print(f"model in {arguments.out}")
    return 0


def _dt_posterior(arguments: argparse.Namespace, console: Console) -> int:
    from probinfer import amortize

    model = amortize.load_dt(arguments.model or amortize.PRETRAINED_DT_2D)
    data = json.loads(Path(arguments.data).read_text())
    try:
        prior_spec = data["prior"]
        prior = amortize.gaussian_mixture(
            prior_spec["weights"], prior_spec["means"], prior_spec["covariances"]
        )
        observations = amortize.linear_gaussian_data(
            data["design"], data["values"], data["noise_sd"], dim=prior.dim
        )
    except KeyError as error:
        raise ValueError(
            f"{arguments.data} lacks {error}; expected "
            '{"prior": {"weights", "means", "covariances"}, "design", "values", "noise_sd"}.'
        ) from None
    result = amortize.posterior(model, prior, observations)
    text = json.dumps(
        {
            "weights": result.weights.tolist(),
            "means": result.means.tolist(),
            "covariances": result.component_covariances.tolist(),
            "mean": result.mean.tolist(),
            "covariance": result.covariance.tolist(),
        },
        indent=2,
    )
    if arguments.out:
        Path(arguments.out).write_text(text)
        console.print(f"wrote {arguments.out}")
    else:
        console.print(text, markup=False, soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``probinfer`` command.

    Returns:
        The parser.
    """
    from probinfer import __version__

    parser = argparse.ArgumentParser(prog="probinfer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"probinfer {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show Python tracebacks instead of one-line errors"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser(
        "bench", help="run every sampler on every zoo model and check against the references"
    )
    bench.add_argument("--models", nargs="+", help="zoo models (default: all)")
    bench.add_argument(
        "--methods",
        nargs="+",
        help="methods (default: nuts hmc mala rwm smc ns; smc, ns: evidence)",
    )
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

    pfn = commands.add_parser("pfn", help="train or use a prior-data fitted network")
    pfn_commands = pfn.add_subparsers(dest="pfn_command", required=True)
    train = pfn_commands.add_parser("train", help="train (or resume) a PFN from a JSON config")
    train.add_argument("--config", required=True, help='JSON: {"prior": {...}, "training": {...}}')
    train.add_argument("--out", required=True, help="checkpoint folder (resumed if present)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--init-from", help="start from this saved model folder (fine-tune or continue)"
    )
    predict = pfn_commands.add_parser("predict", help="posterior predictive for a dataset")
    predict.add_argument(
        "--data", required=True, help='JSON: {"x_train", "y_train", "x_test"[, "y_test"]}'
    )
    predict.add_argument("--model", help="trained model folder (default: the pretrained GP PFN)")
    predict.add_argument("--out", help="JSON file for the predictions (default: print)")

    dt = commands.add_parser("dt", help="train or use a distribution transformer")
    dt_commands = dt.add_subparsers(dest="dt_command", required=True)
    dt_train = dt_commands.add_parser("train", help="train (or resume) from a JSON config")
    dt_train.add_argument(
        "--config", required=True, help='JSON: {"task": {...}, "training": {...}}'
    )
    dt_train.add_argument("--out", required=True, help="checkpoint folder (resumed if present)")
    dt_train.add_argument("--quiet", action="store_true", help="no progress bar")
    dt_posterior = dt_commands.add_parser("posterior", help="posterior mixture for a prior + data")
    dt_posterior.add_argument(
        "--data",
        required=True,
        help='JSON: {"prior": {"weights", "means", "covariances"}, "design", "values", "noise_sd"}',
    )
    dt_posterior.add_argument("--model", help="trained model folder (default: the shipped 2-d one)")
    dt_posterior.add_argument("--out", help="JSON file for the posterior (default: print)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probinfer`` command.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 for an error the user can cause (a model that fails,
        bad data or settings), printed as one line (``--debug`` shows the traceback).
    """
    arguments = build_parser().parse_args(argv)
    console = Console()
    try:
        if arguments.command == "bench":
            return _bench(arguments, console)
        if arguments.command == "pfn":
            if arguments.pfn_command == "train":
                return _pfn_train(arguments, console)
            return _pfn_predict(arguments, console)
        if arguments.command == "dt":
            if arguments.dt_command == "train":
                return _dt_train(arguments, console)
            return _dt_posterior(arguments, console)
        return _sample(arguments, console)
    except Exception as error:  # a user's model, data or settings: one line, exit 2
        if arguments.debug:
            raise
        message = escape(" ".join(str(error).split()) or "(no message)")
        Console(stderr=True).print(
            f"[red]error ({type(error).__name__}): {message}[/red] (rerun with --debug for "
            "the traceback)",
            soft_wrap=True,
            markup=True,
            highlight=False,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
