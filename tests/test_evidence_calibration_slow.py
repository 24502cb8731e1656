"""Honest evidence error bars: z-scores of log Z over 400 seeds, SMC and nested sampling.

``z = (log_z - exact) / log_z_err`` from ``pi.evidence`` at its defaults on zoo models
with an exact evidence (the conjugate ``normal_normal`` and the bimodal
``gaussian_mixture_2d``; for SMC also ``linear_regression``). Honest error bars give
z-scores of mean 0 and a known spread: standard normal for nested sampling; Student t
with 7 degrees of freedom for SMC, whose error bar is the standard error of 8 replicas (sd
``sqrt(7 / 5)`` = 1.18). The checks:
the standard deviation of z over its expected one within 0.8-1.25, and the mean within
4.5 standard errors of 0. With 400 seeds the standard error of the ratio is 0.035 for
normal z (``1 / sqrt(2 (n - 1))``) and 0.05 for t_7 (excess kurtosis 2: ``Var(s^2) /
sigma^4 = 2 / (n - 1) + 2 / n``), so 0.8 and 1.25 are at least 4 and 5 of them away. Over
200 seeds on five zoo models (``benchmarks/results/evidence_calibration/``) the ratios
were 0.98-1.06 (NS) and 0.92-1.03 (SMC). Controls that must fail: error bars 1.5x too
small, and a log Z biased by half an error bar.

SMC also runs on the zoo's ``linear_regression``, where every replica tuning itself (the
ladder, the metric and the step size from its own particles) biased ``log_z`` low: mean z
-0.42 ± 0.16 over 200 seeds, which 400 seeds here flag. With the tuning replica (the
default) each replica's estimate is unbiased (``docs/smc.md``).
"""

import math
import warnings

import numpy as np
import pytest

import probinfer as pi
from probinfer import zoo

pytestmark = pytest.mark.slow  # 5 x 400 runs, about 10 minutes: `make test-slow`

NUM_SEEDS = 400
SMC_REPLICAS = 8  # pi.evidence's default
EXPECTED_SD = {"smc": math.sqrt((SMC_REPLICAS - 1) / (SMC_REPLICAS - 3)), "ns": 1.0}


def _z_scores(name: str, method: str) -> np.ndarray:
    zoo_model = zoo.get(name)
    args, kwargs = zoo_model.data()
    truth = float(zoo_model.reference.log_z)
    z = []
    for seed in range(NUM_SEEDS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # judged by the z-scores
            result = pi.evidence(
                zoo_model.model, *args, method=method, seed=seed, progress=False, **kwargs
            )
        z.append((result.log_z - truth) / result.log_z_err)
    return np.array(z)


@pytest.fixture(scope="module", params=[("normal_normal", "smc"), ("normal_normal", "ns"),
                                        ("gaussian_mixture_2d", "smc"),
                                        ("gaussian_mixture_2d", "ns"),
                                        ("linear_regression", "smc")],
                ids=lambda param: "-".join(param))  # fmt: skip
def z_scores(request) -> tuple[str, np.ndarray]:
    name, method = request.param
    return method, _z_scores(name, method)


def _is_calibrated(method: str, z: np.ndarray) -> bool:
    ratio = np.std(z, ddof=1) / EXPECTED_SD[method]
    mean_ok = abs(np.mean(z)) < 4.5 * np.std(z, ddof=1) / math.sqrt(z.size)
    return bool(0.8 < ratio < 1.25 and mean_ok)


def test_error_bars_are_honest(z_scores):
    method, z = z_scores
    assert _is_calibrated(method, z), (np.mean(z), np.std(z, ddof=1) / EXPECTED_SD[method])


def test_error_bars_too_small_are_caught(z_scores):
    method, z = z_scores
    assert not _is_calibrated(method, 1.5 * z)


def test_a_biased_log_z_is_caught(z_scores):
    """A shift of half an error bar: the mean check's control."""
    method, z = z_scores
    assert not _is_calibrated(method, z + 0.5)
