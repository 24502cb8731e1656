"""The ``probinfer`` command: ``bench``, ``sample``, ``pfn`` and ``dt`` (``probinfer --help``).

Only argument parsing happens at import: JAX and the rest of probinfer are imported inside
the subcommands, so ``--help``, ``--version``, ``pfn list`` and argument errors return at
once. Errors a user can cause print as one line with exit status 2 (``--debug`` shows the
traceback); warnings print as ``warning: <message>``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from probinfer._pretrained import PRETRAINED_MODELS, Kind, model_folder

if TYPE_CHECKING:
    from probinfer.amortize import PFNClassPredictive


def _check_counts(arguments: argparse.Namespace, minimums: dict[str, int]) -> None:
    """Refuse counts below their minimum, by option name, before anything runs.

    Raises:
        ValueError: naming the option (``--chains``), its minimum and the value.
    """
    from probinfer._validation import check_count

    for name, minimum in minimums.items():
        check_count(f"--{name}", getattr(arguments, name), minimum)


def _bench(arguments: argparse.Namespace, console: Console) -> int:
    _check_counts(arguments, {"chains": 1, "warmup": 0, "draws": 1, "seed": 0})
    from probinfer import zoo
    from probinfer.bench import METHODS, markdown_table, run_bench, unexpected_failures

    model_names = arguments.models or zoo.names()
    unknown = sorted(set(model_names) - set(zoo.names()))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {zoo.names()}")
    methods: list[str] = arguments.methods or list(METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
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
        echo=lambda line: console.print(line, soft_wrap=True, markup=False, highlight=False),
    )
    console.print(markdown_table(rows), markup=False, soft_wrap=True)
    written = ", ".join(path.name for path in sorted(Path(arguments.out).glob("bench.*")))
    console.print(f"wrote {written} in {arguments.out}")
    expected = [r for r in rows if r["expected_failure"]]
    failed_as_expected = sum(not r["passed"] for r in expected)
    unexpected = unexpected_failures(rows)
    console.print(
        f"{sum(r['passed'] for r in rows)} of {len(rows)} runs within tolerance; "
        f"{failed_as_expected} of {len(expected)} runs expected to fail did "
        "(their reasons are in the table)",
        soft_wrap=True,
        highlight=False,
    )
    if unexpected:
        console.print(f"[red]unexpected failures: {escape(str(unexpected))}", soft_wrap=True)
        return 1
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
        ValueError: if the file cannot be read or parsed, if the JSON is neither shape, or
            if a list is not a rectangular list of numbers.
    """
    import numpy as np

    if path is None:
        return (), {}
    expected = 'keyword arguments, or {"args": [...], "kwargs": {...}}'
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot read `--data` {path}: {error}. Expected a JSON object: {expected}."
        ) from None

    def convert(name: str, value: Any) -> Any:
        if isinstance(value, list):
            try:
                return np.asarray(value, dtype=float)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"`--data` {path}: {name} is not a rectangular list of numbers ({error}); "
                    "pass numbers only, with the same length in every row."
                ) from None
        if isinstance(value, float):
            return np.asarray(value)
        return value

    if isinstance(content, dict) and set(content) <= {"args", "kwargs"} and content:
        positional, keywords = content.get("args", []), content.get("kwargs", {})
        if not isinstance(positional, list) or not isinstance(keywords, dict):
            raise ValueError(
                f'`--data` {path}: "args" must be a list and "kwargs" an object; expected '
                f"{expected}."
            )
        args = tuple(convert(f"args[{i}]", v) for i, v in enumerate(positional))
        kwargs = {k: convert(f"'{k}'", v) for k, v in keywords.items()}
        return args, kwargs
    if isinstance(content, dict):
        return (), {k: convert(f"'{k}'", v) for k, v in content.items()}
    raise ValueError(f"`--data` {path} must hold a JSON object: {expected}.")


def _sample(arguments: argparse.Namespace, console: Console) -> int:
    _check_counts(arguments, {"chains": 1, "warmup": 0, "draws": 1, "thin": 1, "seed": 0})
    import probinfer as pi

    model = load_model(Path(arguments.model_file), arguments.model_name)
    args, kwargs = load_data(None if arguments.data is None else Path(arguments.data))
    idata = pi.sample(
        model,
        *args,
        method=arguments.method,
        chains=arguments.chains,
        warmup=arguments.warmup,
        draws=arguments.draws,
        thin=arguments.thin,
        seed=arguments.seed,
        progress=not arguments.quiet,
        **kwargs,
    )
    console.print(pi.summary(idata).to_string(), markup=False, soft_wrap=True)
    out = pi.save_netcdf(idata, arguments.out)
    console.print(f"wrote {out}")
    return 0


def _read_training_config(path: str, build: Callable[[dict], Any], expected: str) -> Any:
    """``build(config)`` of the JSON training config at ``path``.

    Raises:
        ValueError: naming the file and the expected layout, for any error in it.
    """
    try:
        return build(json.loads(Path(path).read_text()))
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"bad config {path}: {error}. Expected {expected}.") from None


def _read_json_data(path: str, keys: tuple[str, ...], expected: str) -> dict[str, Any]:
    """The JSON object at ``path``, which must have ``keys``.

    Raises:
        ValueError: naming the file, what is missing and the expected layout.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: {error}. Expected {expected}.") from None
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        raise ValueError(f"{path} lacks {missing}; expected {expected}.")
    return data


def _pfn_train(arguments: argparse.Namespace, console: Console) -> int:
    from probinfer import amortize

    prior_spec, prior, training = _read_training_config(
        arguments.config,
        lambda config: (
            config["prior"],
            amortize.prior_from_spec(config["prior"]),
            amortize.TrainingConfig(**config.get("training", {})),
        ),
        '{"prior": {"type": "gp", ...}, "training": {"num_steps": ..., ...}}',
    )
    _, losses = amortize.train(
        prior,
        training,
        checkpoint_dir=arguments.out,
        prior_spec=prior_spec,
        progress=not arguments.quiet,
        init_from=arguments.init_from,
    )
    if losses.size:
        console.print(f"final loss (mean of last 100 steps): {losses[-100:].mean():.4f}")
        console.print(f"training curve in {Path(arguments.out) / amortize.CURVE_FILE}")
    console.print(f"model in {arguments.out}")
    return 0


def _pfn_fit_tails(arguments: argparse.Namespace, console: Console) -> int:
    folder = Path(arguments.model)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; pass a saved model's folder.")
    from probinfer import amortize
    from probinfer.amortize._training import CONFIG_FILE

    model = amortize.save_fitted_tails(folder, seed=arguments.seed)
    for side, tail in zip(("left", "right"), model.bar.tails, strict=True):
        console.print(f"{side} tail: shape {tail.shape:.4f}, scale {tail.scale:.4g}")
    console.print(f"recorded in {folder / CONFIG_FILE}")
    return 0


def _write_json(text: str, arguments: argparse.Namespace, console: Console) -> int:
    """Write a command's JSON result to ``--out``, or print it."""
    if arguments.out:
        Path(arguments.out).write_text(text)
        console.print(f"wrote {arguments.out}")
    else:
        console.print(text, markup=False, soft_wrap=True)
    return 0


def _pfn_predict(arguments: argparse.Namespace, console: Console) -> int:
    folder = model_folder(arguments.model, "pfn")  # checked before JAX is imported
    data = _read_json_data(
        arguments.data,
        ("x_train", "y_train", "x_test"),
        '{"x_train": [[...], ...], "y_train": [...], "x_test": [[...], ...][, "y_test": [...]]}',
    )
    import numpy as np

    from probinfer import amortize

    model = amortize.load(folder)
    predictive = amortize.predict(
        model, np.asarray(data["x_train"]), np.asarray(data["y_train"]),
        np.asarray(data["x_test"]),
    )  # fmt: skip
    if isinstance(predictive, amortize.PFNClassPredictive):
        return _write_class_prediction(predictive, data, arguments, console)
    stddev = np.asarray(predictive.stddev)
    result = {
        "mean": predictive.mean.tolist(),
        # JSON has no infinity or NaN: a standard deviation that a heavy tail (fitted
        # shape >= 0.5) makes infinite, or a NaN one, is written as null, and said.
        "stddev": [float(s) if np.isfinite(s) else None for s in stddev],
        "quantiles": {str(q): predictive.quantile(q).tolist() for q in (0.05, 0.5, 0.95)},
    }
    if np.any(np.isinf(stddev)):
        console.print(
            "stddev: infinite (written as null) where the predictive's tail is too heavy for "
            "a finite variance (a fitted tail shape >= 0.5); use the quantiles instead."
        )
    if np.any(np.isnan(stddev)):
        console.print(
            f"stddev: NaN (written as null) at {int(np.isnan(stddev).sum())} test point(s); "
            "check the data for NaN or infinite values."
        )
    if "y_test" in data:
        y_test = np.asarray(data["y_test"], dtype=float)
        if y_test.shape != predictive.mean.shape:
            raise ValueError(
                f"`y_test` has shape {y_test.shape} but `x_test` has "
                f"{predictive.mean.shape[0]} points; pass one target per test input."
            )
        log_prob = predictive.log_prob(y_test)
        result["log_prob"] = log_prob.tolist()
        console.print(f"mean test log density: {float(log_prob.mean()):.4f}")
    text = json.dumps(result, indent=2)
    return _write_json(text, arguments, console)


def _write_class_prediction(
    predictive: PFNClassPredictive, data: dict, arguments: argparse.Namespace, console: Console
) -> int:
    """``pfn predict``'s output for a classifier: class probabilities per test point."""
    import numpy as np

    result: dict[str, Any] = {
        "probabilities": predictive.probabilities.tolist(),
        "predicted_class": predictive.predicted_class.tolist(),
    }
    if "y_test" in data:
        log_prob = predictive.log_prob(np.asarray(data["y_test"]))
        result["log_prob"] = log_prob.tolist()
        console.print(f"mean test log probability: {float(log_prob.mean()):.4f}")
    text = json.dumps(result, indent=2)
    return _write_json(text, arguments, console)


def _dt_train(arguments: argparse.Namespace, console: Console) -> int:
    from probinfer import amortize

    task, training = _read_training_config(
        arguments.config,
        lambda config: (
            amortize.task_from_spec(config["task"]),
            amortize.DTTrainingConfig(**config.get("training", {})),
        ),
        '{"task": {"type": "linear_gaussian" or "normal_inverse_gamma", ...}, "training": {...}}',
    )
    _, losses = amortize.train_dt(
        task, training, checkpoint_dir=arguments.out, progress=not arguments.quiet
    )
    if losses.size:
        console.print(f"final loss (mean of last 100 steps): {losses[-100:].mean():.4f}")
        console.print(f"training curve in {Path(arguments.out) / amortize.CURVE_FILE}")
    console.print(f"model in {arguments.out}")
    return 0


def _dt_posterior(arguments: argparse.Namespace, console: Console) -> int:
    folder = model_folder(arguments.model, "dt")  # checked before JAX is imported
    saved = _read_json_data(str(folder / "config.json"), ("task",), "a folder from `dt train`")
    task_type = saved["task"].get("type") if isinstance(saved["task"], dict) else None
    if task_type == "normal_inverse_gamma":
        expected = '{"prior": {"loc", "pseudo_count", "concentration", "rate"}, "values"}'
        prior_keys: tuple[str, ...] = ("loc", "pseudo_count", "concentration", "rate")
        data = _read_json_data(arguments.data, ("prior", "values"), expected)
    elif task_type == "gp_hyperparameters":
        expected = '{"prior": {"weights", "means", "covariances"}, "inputs", "values"}'
        prior_keys = ("weights", "means", "covariances")
        data = _read_json_data(arguments.data, ("prior", "inputs", "values"), expected)
    else:
        expected = '{"prior": {"weights", "means", "covariances"}, "design", "values", "noise_sd"}'
        prior_keys = ("weights", "means", "covariances")
        data = _read_json_data(arguments.data, ("prior", "design", "values", "noise_sd"), expected)
    prior_spec = data["prior"]
    missing = [k for k in prior_keys if not isinstance(prior_spec, dict) or k not in prior_spec]
    if missing:
        raise ValueError(f"{arguments.data}'s prior lacks {missing}; expected {expected}.")
    from probinfer import amortize
    from probinfer.amortize.gp_hyperparameters import HYPERPARAMETER_NAMES

    model = amortize.load_dt(folder)
    if task_type == "normal_inverse_gamma":
        prior: amortize.GaussianMixture | amortize.NormalInverseGamma = (
            amortize.normal_inverse_gamma(*(prior_spec[k] for k in prior_keys))
        )
        observations: (
            amortize.LinearGaussianData | amortize.NormalData | (amortize.GPRegressionData)
        ) = amortize.normal_data(data["values"])
    elif task_type == "gp_hyperparameters":
        prior = amortize.gaussian_mixture(*(prior_spec[k] for k in prior_keys))
        observations = amortize.gp_regression_data(data["inputs"], data["values"])
    else:
        prior = amortize.gaussian_mixture(*(prior_spec[k] for k in prior_keys))
        observations = amortize.linear_gaussian_data(
            data["design"], data["values"], data["noise_sd"], dim=prior.dim
        )
    result = amortize.posterior(model, prior, observations)
    latent = (
        ["mu", "log sigma^2"]
        if task_type == "normal_inverse_gamma"
        else list(HYPERPARAMETER_NAMES)
        if task_type == "gp_hyperparameters"
        else None
    )
    text = json.dumps(
        {
            **({"latent": latent} if latent else {}),
            "weights": result.weights.tolist(),
            "means": result.means.tolist(),
            "covariances": result.component_covariances.tolist(),
            "mean": result.mean.tolist(),
            "covariance": result.covariance.tolist(),
        },
        indent=2,
    )
    return _write_json(text, arguments, console)


def _list(kind: Kind, console: Console) -> int:
    """Print the shipped models of ``kind`` (no JAX import)."""
    console.print(f"shipped {kind.upper()}s (use the name with --model):", highlight=False)
    for model in PRETRAINED_MODELS:
        if model.kind == kind:
            line = f"  {model.name:<10} {model.trained_for}"
            console.print(line, highlight=False, soft_wrap=True, markup=False)
    return 0


_EXAMPLES_EPILOG = """\
examples:
  probinfer bench --models eight_schools_noncentered --methods nuts
  probinfer sample model.py --data data.json --out posterior.nc
  probinfer pfn list
  probinfer pfn predict --data data.json --model gp-rbf
  probinfer dt posterior --data prior_and_data.json

Each command's own --help shows its options and an example (probinfer pfn predict --help).
"""

_HELP: dict[str, tuple[str, str]] = {
    # command: (description, example epilog)
    "bench": (
        "Run every sampler on every model of the built-in zoo and check the draws against "
        "the zoo's reference posteriors (means, standard deviations, R-hat, ESS). Writes "
        "bench.json, bench.md and bench.png to --out. Exit status 1 when a run that is "
        "expected to pass fails (runs expected to fail at the default budget are listed "
        "with their reason).",
        "example:\n  probinfer bench --models eight_schools_noncentered gaussian_iid "
        "--methods nuts mala --draws 500",
    ),
    "sample": (
        "Sample a NumPyro model defined in a Python file, print the summary and save the "
        "draws as ArviZ InferenceData (NetCDF). --data is a JSON file of the model's "
        'arguments: keyword arguments ({"y": [1.2, 0.3]}) or {"args": [...], "kwargs": '
        "{...}}; lists of numbers become float arrays, integers stay integers (sizes).",
        "example:\n  probinfer sample model.py --data data.json --chains 4 --draws 1000 "
        "--out posterior.nc\n\nmodel.py:\n  import numpyro\n  import numpyro.distributions "
        "as dist\n\n  def model(y):\n      mu = numpyro.sample("
        '"mu", dist.Normal(0, 10))\n      numpyro.sample("y", dist.Normal(mu, 1), obs=y)',
    ),
    "pfn": (
        "Prior-data fitted networks: transformers trained on datasets drawn from a prior "
        "that predict the posterior predictive in one forward pass.",
        "examples:\n  probinfer pfn list\n  probinfer pfn predict --data data.json --model "
        "gp-rbf\n  probinfer pfn train --config gp.json --out my_pfn",
    ),
    "pfn list": (
        "List the prior-data fitted networks shipped with the package: their short names "
        "(for --model) and what each was trained for.",
        "example:\n  probinfer pfn list",
    ),
    "pfn train": (
        "Train a prior-data fitted network on datasets drawn from a prior, from a JSON "
        "config; an existing --out folder is resumed from its last checkpoint.",
        'example:\n  probinfer pfn train --config gp.json --out my_pfn\n\ngp.json:\n  {"prior": '
        '{"type": "gp", "kernel": "rbf", "lengthscale": 0.5, "variance": 1.0, "noise": 0.05, '
        '"num_features": 1},\n   "training": {"num_steps": 2000}}',
    ),
    "pfn predict": (
        "The posterior predictive of a dataset in one forward pass of a trained PFN, as "
        "JSON: for regression, mean, standard deviation and quantiles per test input (and "
        "the log density of y_test if given); for a classifier (--model gp-classifier, "
        "y_train holding labels 0, 1), the class probabilities and the most probable class "
        "(and the log probability of y_test's labels).",
        "example:\n  probinfer pfn predict --data data.json --model gp-rbf\n\ndata.json:\n"
        '  {"x_train": [[0.1], [0.5], [-0.3], [0.8], [-0.6]],\n'
        '   "y_train": [0.3, -0.2, 0.5, -0.4, 0.1], "x_test": [[0.3]]}',
    ),
    "pfn fit-tails": (
        "Fit the tails of a saved PFN's output distribution (beyond its outer buckets) to "
        "its prior by maximum likelihood and record them in its config.json; the weights "
        "are untouched (training does this at its start, for models trained since).",
        "example:\n  probinfer pfn fit-tails --model my_pfn",
    ),
    "dt": (
        "Distribution transformers: map a prior (a Gaussian mixture, or a "
        "normal-inverse-gamma for dt-nig; a mixture over a GP's log hyperparameters for "
        "dt-gp) plus data to a Gaussian-mixture posterior.",
        "examples:\n  probinfer dt list\n  probinfer dt posterior --data prior_and_data.json "
        "--model dt-2d\n  probinfer dt train --config task.json --out my_dt",
    ),
    "dt list": (
        "List the distribution transformers shipped with the package: their short names "
        "(for --model) and what each was trained for.",
        "example:\n  probinfer dt list",
    ),
    "dt train": (
        "Train a distribution transformer on a meta-prior over priors (task type "
        "linear_gaussian: Gaussian mixtures; normal_inverse_gamma; gp_hyperparameters), from "
        "a JSON config; an "
        "existing --out folder is resumed from its last checkpoint.",
        'example:\n  probinfer dt train --config task.json --out my_dt\n\ntask.json:\n  {"task": '
        '{"type": "linear_gaussian", "dim": 2}, "training": {"num_steps": 2000}}',
    ),
    "dt posterior": (
        "Map a Gaussian-mixture prior plus linear-Gaussian observations (y_j = a_j . theta "
        "+ noise) to the transformer's Gaussian-mixture posterior, as JSON (for --model "
        "dt-nig: a normal-inverse-gamma prior plus draws of N(mu, sigma^2), to a mixture "
        "over (mu, log sigma^2); for --model dt-gp: a mixture prior over an RBF GP's (log "
        "lengthscale, log variance, log noise) plus points of the GP, inputs on [-1, 1]).",
        "example:\n  probinfer dt posterior --data prior_and_data.json --model dt-2d\n\n"
        'prior_and_data.json:\n  {"prior": {"weights": [1.0], "means": [[0, 0]], '
        '"covariances": [[[1, 0], [0, 1]]]},\n   "design": [[1, 0]], "values": [0.5], '
        '"noise_sd": [0.3]}\n\nfor --model dt-nig:\n  {"prior": {"loc": 0, "pseudo_count": '
        '1, "concentration": 2, "rate": 2}, "values": [1.9, 0.4, 2.6]}\n\nfor --model '
        'dt-gp:\n  {"prior": {"weights": [1.0], "means": [[-1, 0, -4]], "covariances": '
        '[[[0.25, 0, 0], [0, 0.09, 0], [0, 0, 1]]]},\n   "inputs": [-0.5, 0.1, 0.7], '
        '"values": [0.3, -0.4, 0.2]}',
    ),
}


def _add_command(commands: Any, name: str, help_line: str) -> argparse.ArgumentParser:
    description, epilog = _HELP[name]
    return commands.add_parser(
        name.split()[-1],
        help=help_line,
        description=textwrap.fill(description, 88),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_family(
    commands: Any, kind: Kind, help_line: str, list_help: str, train_help: str, config_help: str
) -> tuple[Any, argparse.ArgumentParser]:
    """The ``pfn`` / ``dt`` command group with its ``list`` and ``train`` subcommands.

    Returns:
        The group's subcommands (to add more) and the ``train`` parser.
    """
    group = _add_command(commands, kind, help_line)
    subcommands = group.add_subparsers(dest=f"{kind}_command", required=True, metavar="COMMAND")
    listing = _add_command(subcommands, f"{kind} list", list_help)
    listing.set_defaults(run=lambda _, console: _list(kind, console))
    train = _add_command(subcommands, f"{kind} train", train_help)
    train.add_argument("--config", required=True, help=config_help)
    train.add_argument("--out", required=True, help="checkpoint folder (resumed if present)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    return subcommands, train


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``probinfer`` command (imports nothing heavy).

    Returns:
        The parser.
    """
    from probinfer import __version__

    parser = argparse.ArgumentParser(
        prog="probinfer",
        description=textwrap.fill(
            "Bayesian inference on JAX: sample NumPyro models, benchmark the samplers on the "
            "built-in model zoo, and train or use amortized models (PFNs, distribution "
            "transformers).",
            88,
        ),
        epilog=_EXAMPLES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"probinfer {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show Python tracebacks instead of one-line errors"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = _add_command(
        commands, "bench", "run every sampler on every zoo model and check against the references"
    )
    bench.set_defaults(run=_bench)
    bench.add_argument("--models", nargs="+", help="zoo models (default: all)")
    bench.add_argument(
        "--methods",
        nargs="+",
        help="methods (default: nuts hmc mala rwm smc ns; smc, ns: evidence)",
    )
    bench.add_argument("--chains", type=int, default=4, help="chains per run (default: 4)")
    bench.add_argument("--warmup", type=int, default=1000, help="warm-up steps (default: 1000)")
    bench.add_argument("--draws", type=int, default=1000, help="draws per chain (default: 1000)")
    bench.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    bench.add_argument("--out", default="bench-results", help="output folder")

    sample = _add_command(commands, "sample", "sample one NumPyro model and save NetCDF")
    sample.set_defaults(run=_sample)
    sample.add_argument("model_file", help="Python file defining the NumPyro model")
    sample.add_argument("--model-name", default="model", help="function name (default: model)")
    sample.add_argument(
        "--data", help='JSON: keyword arguments, or {"args": [...], "kwargs": {...}}'
    )
    sample.add_argument(
        "--method", default="nuts", choices=["nuts", "hmc", "mala", "rwm"], help="sampler"
    )
    sample.add_argument("--chains", type=int, default=4, help="chains (default: 4)")
    sample.add_argument("--warmup", type=int, default=1000, help="warm-up steps (default: 1000)")
    sample.add_argument("--draws", type=int, default=1000, help="draws per chain (default: 1000)")
    sample.add_argument(
        "--thin", type=int, default=1,
        help="MCMC transitions per kept draw (default: 1; runs draws x thin transitions)",
    )  # fmt: skip
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--out", default="posterior.nc", help="NetCDF file to write")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")

    pfn_commands, train = _add_family(
        commands, "pfn", "list, train or use prior-data fitted networks",
        "the shipped PFNs and what each was trained for",
        "train (or resume) a PFN from a JSON config",
        'JSON: {"prior": {...}, "training": {...}}',
    )  # fmt: skip
    train.set_defaults(run=_pfn_train)
    train.add_argument(
        "--init-from", help="start from this saved model folder (fine-tune or continue)"
    )
    predict = _add_command(pfn_commands, "pfn predict", "posterior predictive for a dataset")
    predict.set_defaults(run=_pfn_predict)
    predict.add_argument(
        "--data", required=True, help='JSON: {"x_train", "y_train", "x_test"[, "y_test"]}'
    )
    predict.add_argument(
        "--model", help="a shipped model's short name (probinfer pfn list) or a saved-model "
        "folder (default: gp-scale-free, for data in any units)"
    )  # fmt: skip
    predict.add_argument("--out", help="JSON file for the predictions (default: print)")
    fit_tails = _add_command(pfn_commands, "pfn fit-tails", "fit a saved PFN's tails to its prior")
    fit_tails.set_defaults(run=_pfn_fit_tails)
    fit_tails.add_argument("--model", required=True, help="a saved model's folder")
    fit_tails.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    dt_commands, dt_train = _add_family(
        commands, "dt", "list, train or use distribution transformers",
        "the shipped transformers and what each was trained for",
        "train (or resume) from a JSON config",
        'JSON: {"task": {...}, "training": {...}}',
    )  # fmt: skip
    dt_train.set_defaults(run=_dt_train)
    dt_posterior = _add_command(dt_commands, "dt posterior", "posterior mixture for a prior + data")
    dt_posterior.set_defaults(run=_dt_posterior)
    dt_posterior.add_argument(
        "--data",
        required=True,
        help='JSON: {"prior": {"weights", "means", "covariances"}, "design", "values", "noise_sd"}',
    )
    dt_posterior.add_argument(
        "--model", help="a shipped model's short name (probinfer dt list) or a saved-model "
        "folder (default: dt-2d)"
    )  # fmt: skip
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
    errors = Console(stderr=True)

    def show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = escape(" ".join(str(message).split()))
        errors.print(f"[yellow]warning: {text}[/yellow]", soft_wrap=True, highlight=False)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning  # a message, not the source line it came from
        try:
            return arguments.run(arguments, console)
        except Exception as error:  # a user's model, data or settings: one line, exit 2
            if arguments.debug:
                raise
            message = escape(" ".join(str(error).split()) or "(no message)")
            errors.print(
                f"[red]error ({type(error).__name__}): {message}[/red] (rerun with --debug "
                "for the traceback)",
                soft_wrap=True,
                markup=True,
                highlight=False,
            )
            return 2


if __name__ == "__main__":
    sys.exit(main())
