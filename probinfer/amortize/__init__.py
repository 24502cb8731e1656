"""Amortized inference: prior-data fitted networks (PFNs).

A PFN is a transformer trained on datasets drawn from a prior to predict held-out targets;
after training, one forward pass gives the posterior predictive of a new dataset
(Müller et al., 2022). ``priors`` holds the dataset priors, ``pfn`` the network,
:func:`train` the resumable training loop and :func:`predict` the checked prediction.
"""

from pathlib import Path

from probinfer.amortize._bar import BarDistribution
from probinfer.amortize._predict import PFNPredictive, load, predict, prior_from_spec
from probinfer.amortize._training import (
    TrainingConfig,
    TrainState,
    batch_loss,
    build_model,
    initial_state,
    make_optimizer,
    save_checkpoint,
    train,
)
from probinfer.amortize.pfn import PFN, TransformerLayer, attention_mask
from probinfer.amortize.priors import (
    AbstractDatasetPrior,
    BayesianLinearRegressionPrior,
    BNNPrior,
    GPHyperPrior,
    GPPrior,
    ScaleMixturePrior,
    sample_batch,
)

PRETRAINED_GP = Path(__file__).parent / "pretrained" / "gp_rbf"
"""The shipped GP-prior PFN (see ``pretrained/gp_rbf/README.md`` for how it was trained)."""
PRETRAINED_GP_HYPER = Path(__file__).parent / "pretrained" / "gp_hyper"
"""The shipped PFN for a GP with log-normal hyperpriors (``pretrained/gp_hyper/README.md``)."""

__all__ = [
    "PFN",
    "PRETRAINED_GP",
    "PRETRAINED_GP_HYPER",
    "AbstractDatasetPrior",
    "BNNPrior",
    "BarDistribution",
    "BayesianLinearRegressionPrior",
    "GPHyperPrior",
    "GPPrior",
    "PFNPredictive",
    "ScaleMixturePrior",
    "TrainState",
    "TrainingConfig",
    "TransformerLayer",
    "attention_mask",
    "batch_loss",
    "build_model",
    "initial_state",
    "load",
    "make_optimizer",
    "predict",
    "prior_from_spec",
    "sample_batch",
    "save_checkpoint",
    "train",
]
