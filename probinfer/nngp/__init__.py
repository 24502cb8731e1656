"""Neural-network Gaussian processes (NNGPs) and their scale mixtures.

Kernels of infinitely wide networks are built like networks, ``serial(dense(...), relu(),
dense(...))``, and called on inputs for their covariance matrix. Putting a prior on the last
layer's variance scale, ``f | s ~ GP(0, s K)``, ``s ~ H``, gives the scale-mixture processes
of Lee et al. (2022): inverse gamma yields a Student-t process in closed form, other priors
are integrated by quadrature or importance sampling. Stationary kernels (``rbf``,
``matern52``) share the same process machinery.
"""

from probinfer.nngp._classification import ClassificationPosterior, sample_classifier
from probinfer.nngp._fit import SCALE_PRIOR_FAMILIES, FitResult, fit_hyperparameters
from probinfer.nngp._kernel import AbstractKernel, KernelState, kernel_diagonal, kernel_matrix
from probinfer.nngp._layers import (
    AbstractLayer,
    Dense,
    Elementwise,
    Erf,
    ReLU,
    Residual,
    Serial,
    dense,
    elementwise,
    erf,
    mlp,
    relu,
    residual,
    serial,
)
from probinfer.nngp._network import random_network
from probinfer.nngp._numpyro import gaussian_process
from probinfer.nngp._posterior import AbstractScaleMixturePosterior
from probinfer.nngp._predictive import (
    AbstractPredictive,
    NormalPredictive,
    ScaleMixturePredictive,
    StudentTPredictive,
)
from probinfer.nngp._process import ScaleMixturePosterior, ScaleMixtureProcess
from probinfer.nngp._scale_posterior import (
    ScaleWeights,
    adaptive_quadrature,
    importance_sampling,
    inverse_gamma_posterior,
    quadrature,
)
from probinfer.nngp._scale_priors import (
    BurrXII,
    burr_xii,
    gamma,
    half_cauchy_std,
    inverse_gamma,
    log_normal,
)
from probinfer.nngp._sparse import SparseScaleMixturePosterior, select_inducing_points
from probinfer.nngp._stationary import RBF, Matern52, matern52, rbf
from probinfer.nngp._variational import (
    VariationalClassifier,
    VariationalParams,
    fit_variational_classifier,
)

__all__ = [
    "AbstractKernel",
    "AbstractLayer",
    "AbstractPredictive",
    "AbstractScaleMixturePosterior",
    "BurrXII",
    "ClassificationPosterior",
    "Dense",
    "Elementwise",
    "Erf",
    "FitResult",
    "KernelState",
    "Matern52",
    "NormalPredictive",
    "RBF",
    "ReLU",
    "Residual",
    "SCALE_PRIOR_FAMILIES",
    "ScaleMixturePosterior",
    "ScaleMixturePredictive",
    "ScaleMixtureProcess",
    "ScaleWeights",
    "VariationalClassifier",
    "VariationalParams",
    "Serial",
    "SparseScaleMixturePosterior",
    "StudentTPredictive",
    "adaptive_quadrature",
    "burr_xii",
    "dense",
    "elementwise",
    "erf",
    "fit_hyperparameters",
    "fit_variational_classifier",
    "gamma",
    "gaussian_process",
    "half_cauchy_std",
    "importance_sampling",
    "inverse_gamma",
    "inverse_gamma_posterior",
    "kernel_diagonal",
    "kernel_matrix",
    "log_normal",
    "matern52",
    "mlp",
    "quadrature",
    "random_network",
    "rbf",
    "relu",
    "residual",
    "sample_classifier",
    "select_inducing_points",
    "serial",
]
