"""Amortized inference: prior-data fitted networks (PFNs) and distribution transformers.

A PFN is a transformer trained on datasets drawn from a prior to predict held-out targets;
after training, one forward pass gives the posterior predictive of a new dataset
(Müller et al., 2022). ``priors`` holds the dataset priors, ``pfn`` the network (and
``classifier`` its classification variant, trained on a GP-classification prior),
:func:`train` the resumable training loop and :func:`predict` the checked prediction.

A distribution transformer maps a Gaussian-mixture prior (or a parametric prior:
``normal_inverse_gamma``) plus data (linear-Gaussian, draws of a normal, or GP regression
data for a prior over a GP's hyperparameters: ``gp_hyperparameters``) to a Gaussian-mixture
posterior (Whittle et al.):
``mixture`` holds the distributions, ``dt_tasks`` the meta-priors it is trained on,
:func:`train_dt` the training loop, :func:`posterior` the checked call and
:func:`evaluate_dt` the comparison with the exact posterior.
"""

from probinfer._pretrained import PRETRAINED_MODELS, PretrainedModel, pretrained_model
from probinfer.amortize._bar import BarDistribution, Tail, fit_tail
from probinfer.amortize._classify import PFNClassPredictive
from probinfer.amortize._dt_evaluation import DTEvaluation, evaluate_dt, exact_posterior
from probinfer.amortize._dt_training import (
    DTTrainingConfig,
    DTTrainState,
    dt_batch_loss,
    load_dt,
    train_dt,
    trained_sharpness,
)
from probinfer.amortize._predict import PFNPredictive, load, predict, prior_from_spec
from probinfer.amortize._training import (
    CURVE_FILE,
    TrainingConfig,
    TrainingCurve,
    TrainState,
    batch_loss,
    build_model,
    fit_tails,
    initial_state,
    make_optimizer,
    read_training_curve,
    save_checkpoint,
    save_fitted_tails,
    train,
)
from probinfer.amortize.classifier import PFNClassifier
from probinfer.amortize.distribution_transformer import (
    CrossAttentionLayer,
    DistributionTransformer,
    data_sharpness,
    posterior,
)
from probinfer.amortize.dt_tasks import (
    AbstractPosteriorTask,
    GPHyperparameterTask,
    LinearGaussianTask,
    NormalInverseGammaTask,
    TrainingExample,
    sample_examples,
    task_from_spec,
)
from probinfer.amortize.gp_hyperparameters import (
    GPRegressionData,
    ImportancePosterior,
    gp_log_likelihood,
    gp_predictive_log_density,
    gp_regression_data,
    importance_posterior,
    widened,
)
from probinfer.amortize.mixture import (
    GaussianMixture,
    LinearGaussianData,
    gaussian_mixture,
    linear_gaussian_data,
)
from probinfer.amortize.normal_inverse_gamma import (
    NormalData,
    NormalInverseGamma,
    normal_data,
    normal_inverse_gamma,
)
from probinfer.amortize.pfn import (
    PFN,
    AbstractPFN,
    Standardisation,
    TransformerLayer,
    attention_mask,
    standardisation,
)
from probinfer.amortize.priors import (
    AbstractDatasetPrior,
    BayesianLinearRegressionPrior,
    BNNPrior,
    GPClassificationPrior,
    GPHyperPrior,
    GPPrior,
    ScaleMixturePrior,
    sample_batch,
)

PRETRAINED_GP_SCALE_FREE = pretrained_model("gp-scale-free").folder
"""The shipped scale-free GP PFN, for data in any units (``pretrained/gp_scale_free/README.md``)."""
PRETRAINED_GP_HYPER_MIXED = pretrained_model("gp-hyper-mixed").folder
"""The shipped scale-free PFN for 1-5 inputs, RBF and Matérn-5/2 kernels with hyperpriors
(``pretrained/gp_hyper_mixed/README.md``)."""
PRETRAINED_GP = pretrained_model("gp-rbf").folder
"""The shipped GP-prior PFN (see ``pretrained/gp_rbf/README.md`` for how it was trained)."""
PRETRAINED_GP_HYPER = pretrained_model("gp-hyper").folder
"""The shipped PFN for a GP with log-normal hyperpriors (``pretrained/gp_hyper/README.md``)."""
PRETRAINED_STUDENT_T = pretrained_model("student-t").folder
"""The shipped Student-t process PFN (``pretrained/student_t_process/README.md``)."""
PRETRAINED_GP_CLASSIFIER = pretrained_model("gp-classifier").folder
"""The shipped GP-classification PFN (``pretrained/gp_classifier/README.md``)."""

PRETRAINED_DT_2D = pretrained_model("dt-2d").folder
"""The shipped 2-d distribution transformer (``pretrained/dt_linear_gaussian_2d/README.md``)."""
PRETRAINED_DT_1D = pretrained_model("dt-1d").folder
"""The shipped 1-d distribution transformer (``pretrained/dt_linear_gaussian_1d/README.md``)."""
PRETRAINED_DT_NORMAL_INVERSE_GAMMA = pretrained_model("dt-nig").folder
"""The shipped transformer for a normal-inverse-gamma prior
(``pretrained/dt_normal_inverse_gamma/README.md``)."""
PRETRAINED_DT_GP = pretrained_model("dt-gp").folder
"""The shipped transformer for a prior over a GP's hyperparameters
(``pretrained/dt_gp_hyperparameters/README.md``)."""

__all__ = [
    "PFN",
    "AbstractPFN",
    "PFNClassifier",
    "PFNClassPredictive",
    "GPClassificationPrior",
    "Standardisation",
    "standardisation",
    "PRETRAINED_DT_1D",
    "PRETRAINED_DT_2D",
    "PRETRAINED_DT_NORMAL_INVERSE_GAMMA",
    "PRETRAINED_DT_GP",
    "AbstractPosteriorTask",
    "CrossAttentionLayer",
    "DTEvaluation",
    "DTTrainState",
    "DTTrainingConfig",
    "DistributionTransformer",
    "GaussianMixture",
    "GPHyperparameterTask",
    "GPRegressionData",
    "ImportancePosterior",
    "gp_log_likelihood",
    "gp_predictive_log_density",
    "gp_regression_data",
    "importance_posterior",
    "widened",
    "LinearGaussianData",
    "LinearGaussianTask",
    "NormalData",
    "NormalInverseGamma",
    "NormalInverseGammaTask",
    "normal_data",
    "normal_inverse_gamma",
    "TrainingExample",
    "data_sharpness",
    "dt_batch_loss",
    "evaluate_dt",
    "exact_posterior",
    "gaussian_mixture",
    "linear_gaussian_data",
    "load_dt",
    "posterior",
    "sample_examples",
    "task_from_spec",
    "train_dt",
    "trained_sharpness",
    "PRETRAINED_GP",
    "PRETRAINED_GP_HYPER",
    "PRETRAINED_GP_HYPER_MIXED",
    "PRETRAINED_GP_SCALE_FREE",
    "PRETRAINED_STUDENT_T",
    "PRETRAINED_GP_CLASSIFIER",
    "PRETRAINED_MODELS",
    "PretrainedModel",
    "pretrained_model",
    "AbstractDatasetPrior",
    "BNNPrior",
    "BarDistribution",
    "Tail",
    "fit_tail",
    "fit_tails",
    "save_fitted_tails",
    "BayesianLinearRegressionPrior",
    "GPHyperPrior",
    "GPPrior",
    "PFNPredictive",
    "ScaleMixturePrior",
    "TrainState",
    "TrainingCurve",
    "CURVE_FILE",
    "read_training_curve",
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
