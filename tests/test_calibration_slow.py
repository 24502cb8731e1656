"""Simulation-based calibration of every inference family (harness: ``_sbc.py``).

For each method, :func:`probinfer.diagnostics.sbc` runs ``FAMILY_REPLICATES`` replicates
of the five-point normal model (``mu ~ Normal(0, 1)``, ``sigma ~ HalfNormal(1)``), one fit
per replicate, and tests the ranks of ``mu`` and ``sigma`` among 99 posterior draws with
the exact rank-ECDF test at ``ALPHA`` = 5e-5 per site. The correct model must pass; two
negative controls fitted to the same data must fail: a half-normal whose unconstrained
transform drops its log-Jacobian (the sigma ranks skew), and a prior on ``mu`` three times
too narrow (both skew). ``benchmarks/sbc.py`` runs exactly these fits and commits their
p-values and rank-ECDF plots (``benchmarks/results/sbc/``); at 200 replicates every
family already passed and every control failed, the dropped Jacobian with p between 4e-6
and 9e-6 for sigma.

The binary and the three-class NNGP classifier (NUTS and Gibbs) are calibrated on labels
from their own model (``classifier_sbc``), with a prior on ``log s`` three times too narrow
as the control.

The shipped PFNs are calibrated by the probability integral transforms of held-out
targets on datasets from their training prior (``pfn_pit_ranks``), with a wrong prior and
a squeezed predictive as controls; the classifier PFN by Spiegelhalter's test of held-out
labels (``pfn_classifier_calibration``), with its logits doubled and halved as controls.
"""

import pytest
from _sbc import (
    ALPHA,
    CLASSIFIER_CLASSES,
    CLASSIFIER_CONTROLS,
    CLASSIFIER_METHODS,
    CLASSIFIER_REPLICATES,
    CONTROLS,
    FAMILY_REPLICATES,
    FAMILY_SETTINGS,
    NUM_RANKED,
    PFN_CLASSIFIER_CONTROLS,
    PFN_CONTROLS,
    PFN_MODELS,
    PFN_TRAIN_SIZES,
    classifier_sbc,
    family_sbc,
    passes,
    pfn_classifier_calibration,
    pfn_pit_ranks,
)

from probinfer.diagnostics import rank_ecdf_test

pytestmark = pytest.mark.slow  # ~10-40 s per run: `make test-slow`


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("method", list(FAMILY_SETTINGS))
def test_family_is_calibrated_and_its_controls_are_not(method, control):
    result = family_sbc(method, control, FAMILY_REPLICATES, seed=0)
    assert passes(result) == (control == "correct"), result.p_values


@pytest.mark.parametrize("control", CLASSIFIER_CONTROLS)
@pytest.mark.parametrize("method", CLASSIFIER_METHODS)
@pytest.mark.parametrize("num_classes", CLASSIFIER_CLASSES)
def test_nngp_classifier_is_calibrated_and_its_control_is_not(num_classes, method, control):
    """``log s`` and two latent values of the binary or three-class NNGP classifier, fitted
    to labels from its own model; fitted with a 3x too narrow prior on ``log s``, the ranks
    must fail."""
    result = classifier_sbc(method, control, CLASSIFIER_REPLICATES, seed=0,
                            num_classes=num_classes)  # fmt: skip
    assert passes(result) == (control == "correct"), result.p_values


@pytest.mark.parametrize("control", PFN_CONTROLS)
@pytest.mark.parametrize("num_train", PFN_TRAIN_SIZES)
@pytest.mark.parametrize("name", PFN_MODELS)
def test_pfn_predictive_is_calibrated_and_its_controls_are_not(name, num_train, control):
    """PITs of the shipped PFNs on 1,000 prior datasets are uniform; a predictive squeezed
    2x is caught for every model, data from a 4x-variance prior for the GP models that are
    not scale-free, data with 4x the relative noise for the Student-t process model (a
    scale-free model adapts to its control: ``PFN_CONTROLS``)."""
    p_value = rank_ecdf_test(pfn_pit_ranks(name, control, num_train), NUM_RANKED)
    if control == "wrong prior" and name == "gp_scale_free":
        pytest.skip(f"reported, not asserted (p = {p_value:.2g}): see PFN_CONTROLS")
    assert (p_value > ALPHA) == (control == "correct"), p_value


@pytest.mark.parametrize("control", PFN_CLASSIFIER_CONTROLS)
@pytest.mark.parametrize("num_train", PFN_TRAIN_SIZES)
def test_pfn_classifier_is_calibrated_and_its_controls_are_not(num_train, control):
    """Held-out labels of 2,000 prior datasets against the shipped classifier PFN's
    probabilities (Spiegelhalter's z); its logits doubled or halved must be caught."""
    z, p_value = pfn_classifier_calibration(control, num_train)
    assert (p_value > ALPHA) == (control == "correct"), (z, p_value)
