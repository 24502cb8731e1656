"""The pretrained amortizers shipped with the package, by short name.

JAX-free on purpose: ``probinfer pfn list`` and the CLI's checks of ``--model`` run
without importing JAX. Each model's folder has a ``README.md`` saying how it was trained
and validated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

PRETRAINED_FOLDER = Path(__file__).parent / "amortize" / "pretrained"

Kind = Literal["pfn", "dt"]


@dataclasses.dataclass(frozen=True)
class PretrainedModel:
    """One shipped model.

    Attributes:
        name: the short name (``probinfer pfn predict --model gp-hyper``).
        kind: ``"pfn"`` (load with ``amortize.load``) or ``"dt"`` (``amortize.load_dt``).
        folder: the saved model's folder inside the installed package.
        trained_for: one line on the datasets or priors it was trained on.
    """

    name: str
    kind: Kind
    folder: Path
    trained_for: str


PRETRAINED_MODELS = (
    PretrainedModel(
        "gp-scale-free",
        "pfn",
        PRETRAINED_FOLDER / "gp_scale_free",
        "GP regression in any units (scale-free: each input's train range mapped onto "
        "[-1, 1], targets standardised), RBF kernel with log-normal hyperpriors; 1-3 inputs; "
        "5-50 train points",
    ),
    PretrainedModel(
        "gp-hyper-mixed",
        "pfn",
        PRETRAINED_FOLDER / "gp_hyper_mixed",
        "GP regression in any units (scale-free), RBF or Matern-5/2 kernel (either with "
        "probability 1/2) with log-normal hyperpriors; 1-5 inputs; 5-100 train points",
    ),
    PretrainedModel(
        "gp-rbf",
        "pfn",
        PRETRAINED_FOLDER / "gp_rbf",
        "GP regression, RBF kernel (lengthscale 0.5, variance 1), noise variance 0.05; "
        "1-3 inputs in [-1, 1]; up to 50 train points",
    ),
    PretrainedModel(
        "gp-hyper",
        "pfn",
        PRETRAINED_FOLDER / "gp_hyper",
        "GP regression, RBF kernel with log-normal priors on lengthscale, variance and "
        "noise; 1-3 inputs in [-1, 1]; up to 50 train points",
    ),
    PretrainedModel(
        "student-t",
        "pfn",
        PRETRAINED_FOLDER / "student_t_process",
        "Student-t process regression (heavy-tailed functions): ReLU NNGP kernel with 2 "
        "hidden layers, inverse-gamma(2, 2) output scale, relative noise 0.05; 1-3 inputs "
        "in [-1, 1]; up to 50 train points",
    ),
    PretrainedModel(
        "gp-classifier",
        "pfn",
        PRETRAINED_FOLDER / "gp_classifier",
        "binary GP classification (labels 0/1, logistic link): latent ReLU NNGP kernel with 2 "
        "hidden layers, inverse-gamma(2, 2) scale; 1-3 inputs in [-1, 1]; up to 50 train "
        "points",
    ),
    PretrainedModel(
        "dt-2d",
        "dt",
        PRETRAINED_FOLDER / "dt_linear_gaussian_2d",
        "Gaussian-mixture prior on R^2 (1-4 components) plus 0-8 linear-Gaussian "
        "observations -> posterior mixture",
    ),
    PretrainedModel(
        "dt-1d",
        "dt",
        PRETRAINED_FOLDER / "dt_linear_gaussian_1d",
        "Gaussian-mixture prior on R (1-4 components) plus 0-8 linear-Gaussian "
        "observations -> posterior mixture (a filter's update step)",
    ),
    PretrainedModel(
        "dt-nig",
        "dt",
        PRETRAINED_FOLDER / "dt_normal_inverse_gamma",
        "normal-inverse-gamma prior plus 0-16 draws of N(mu, sigma^2) -> posterior "
        "mixture over (mu, log sigma^2)",
    ),
    PretrainedModel(
        "dt-gp",
        "dt",
        PRETRAINED_FOLDER / "dt_gp_hyperparameters",
        "mixture prior over an RBF GP's (log lengthscale, log variance, log noise) plus 0-20 "
        "points on [-1, 1] -> posterior mixture",
    ),
)

DEFAULT_MODEL: dict[Kind, str] = {"pfn": "gp-scale-free", "dt": "dt-2d"}


def pretrained_model(name: str) -> PretrainedModel:
    """The shipped model called ``name``.

    Args:
        name: a short name from :data:`PRETRAINED_MODELS`.

    Returns:
        The model's entry.

    Raises:
        ValueError: for an unknown name (the message lists the shipped ones).
    """
    for model in PRETRAINED_MODELS:
        if model.name == name:
            return model
    names = ", ".join(model.name for model in PRETRAINED_MODELS)
    raise ValueError(f"no shipped model is called {name!r}; the shipped ones are {names}.")


def model_folder(name_or_folder: str | None, kind: Kind) -> Path:
    """The folder of a shipped model's short name, or a user's saved-model folder.

    Args:
        name_or_folder: a short name (``"gp-hyper"``), a folder, or None for the default
            model of ``kind``.
        kind: ``"pfn"`` or ``"dt"``: which family the caller loads.

    Returns:
        The folder to load.

    Raises:
        ValueError: for a short name of the other family, or a name that is neither a
            shipped model nor an existing folder.
    """
    name = DEFAULT_MODEL[kind] if name_or_folder is None else name_or_folder
    if any(model.name == name for model in PRETRAINED_MODELS):
        model = pretrained_model(name)
        if model.kind != kind:
            raise ValueError(
                f"{name!r} is a shipped {model.kind.upper()}, not a {kind.upper()}: use it "
                f"with `probinfer {model.kind} ...`."
            )
        return model.folder
    if Path(name).is_dir():
        return Path(name)
    names = ", ".join(model.name for model in PRETRAINED_MODELS if model.kind == kind)
    raise ValueError(
        f"{name!r} is neither a shipped {kind.upper()} ({names}) nor a saved-model folder; "
        f"`probinfer {kind} list` shows the shipped ones."
    )
