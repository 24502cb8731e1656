"""Nested sampling: the evidence accounting against exact answers, the sampler against
analytic evidences and posteriors, the API contracts and bad input.

Evidence checks are ``|log_z - truth| < Z_T * log_z_err`` (STYLE section 9). Over 10-20
seeds each with the default settings, error / ``log_z_err`` had an rms of 0.76-1.01 and
never exceeded 3 in absolute value on the 2-d box, the shells, the two modes and the
regression, so a false failure at ``Z_T = 4`` is rare; the tests also show that their
checks fail against a wrong truth.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from _stats import Z, assert_checks, check_expectation
from jax.scipy.special import logsumexp, ndtr

import probinfer as pi
from probinfer import mcmc, ns
from probinfer.model import Target
from probinfer.zoo import linear_regression

Z_T = 4.0
QUIET = {"progress": False}


# ---------------------------------------------------------------------------------------
# Evidence accounting, against perfect nested sampling simulated in volume space


def _perfect_runs(key, num_runs, num_live, num_delete, num_iterations, scale):
    """Exact nested sampling of ``L(X) = exp(-X / scale)`` in volume space: the live points'
    volumes are uniform below the current contour, so removing the ``k`` largest volumes and
    drawing ``k`` replacements uniformly below the largest kept one is a perfect run."""

    def one(key):
        key_init, key_run = jax.random.split(key)
        volumes = jax.random.uniform(key_init, (num_live,))

        def iteration(volumes, key):
            volumes = jnp.sort(volumes)[::-1]  # largest volume = lowest likelihood first
            dead, kept = volumes[:num_delete], volumes[num_delete:]
            contour = dead[-1]
            new = contour * jax.random.uniform(key, (num_delete,))
            return jnp.concatenate([kept, new]), dead

        volumes, dead = jax.lax.scan(iteration, volumes, jax.random.split(key_run, num_iterations))
        order = jnp.concatenate([dead.reshape(-1), jnp.sort(volumes)[::-1]])
        return -order / scale - jnp.log(scale)

    return jax.vmap(one)(jax.random.split(key, num_runs))


@pytest.fixture(scope="module")
def perfect(fully_optimized):
    """400 perfect runs (n = 100, k = 10), L = exp(-X / 0.001) / 0.001: Z = 1 - e^-1000,
    H = log(1/0.001) - 1 ~ 5.9 nats, so ~ 90 iterations reach the posterior bulk."""
    num_live, num_delete, num_iterations = 100, 10, 150
    with fully_optimized():  # 400 runs' simulated shrinkages: running, not compiling
        loglikelihood = _perfect_runs(
            jax.random.key(0), 400, num_live, num_delete, num_iterations, 1e-3
        )
        counts = ns.removal_counts(num_live, num_delete, num_iterations)
        keys = jax.random.split(jax.random.key(1), 400)
        summarize = jax.jit(jax.vmap(ns.summarize, in_axes=(0, 0, None)))
        summaries = summarize(keys, loglikelihood, counts)
    return loglikelihood, counts, summaries


def test_accounting_is_unbiased_and_its_error_matches_the_spread(perfect):
    """With perfect draws the only error is the volumes': the mean of log Z over 400 runs is
    the truth within 4 standard errors, and the reported ``log_z_err`` (simulated
    shrinkages) and ``sqrt(H / n)`` match the spread of log Z across runs within 4 standard
    errors of a standard deviation from 400 runs (~3.5% each)."""
    _, _, summaries = perfect
    log_z = np.asarray(summaries.log_z, np.float64)
    errors = log_z - 0.0  # Z = 1 - exp(-1000) = 1
    spread = np.std(errors, ddof=1)
    assert abs(np.mean(errors)) < Z * spread / np.sqrt(errors.size), np.mean(errors)
    sd_of_sd = spread / np.sqrt(2 * (errors.size - 1))
    for reported in (summaries.log_z_err, summaries.log_z_err_information):
        assert abs(np.mean(reported) - spread) < Z * sd_of_sd, (np.mean(reported), spread)
    assert abs(np.mean(summaries.information) - (np.log(1e3) - 1.0)) < 0.05


def test_accounting_without_k_deletion_counts_is_detected(perfect):
    """Power: counting ``n`` live points at every removal (ignoring that a k-deletion
    iteration removes its points from n, n - 1, ..., n - k + 1) shifts log Z by ~0.3 nats,
    which the mean over 400 runs sees."""
    loglikelihood, counts, summaries = perfect
    flat_counts = jnp.where(jnp.arange(counts.size) < counts.size - 100, 100, counts)
    wrong = jax.vmap(ns.log_weights, in_axes=(0, None))(loglikelihood, flat_counts)
    errors = np.asarray(logsumexp(wrong, axis=1), np.float64)
    spread = np.std(np.asarray(summaries.log_z), ddof=1)
    assert abs(np.mean(errors)) > Z * spread / np.sqrt(errors.size)


def test_constant_likelihood_weights_the_volume_down_to_the_best_point():
    """L = e^-2 everywhere: the weights add up to e^-2 times the volume above the expected
    contour of the last (best) point, 1 - exp(-sum 1/n_i); the volume beyond the best
    point is never weighted (its share is below the stopping fraction)."""
    counts = ns.removal_counts(50, 5, 20)
    summary = ns.summarize(jax.random.key(0), jnp.full(counts.shape, -2.0), counts)
    covered = np.log1p(-np.exp(-np.sum(1.0 / np.asarray(counts, np.float64))))
    np.testing.assert_allclose(float(summary.log_z), -2.0 + covered, atol=1e-5)
    np.testing.assert_allclose(float(summary.information), -covered, atol=1e-5)


# ---------------------------------------------------------------------------------------
# The sampler on targets with exact answers

SIGMA = 0.1


def box_loglikelihood(x):
    """A normalised Gaussian N(0.5, 0.1^2 I) likelihood on the unit-cube prior."""
    return jnp.sum(-0.5 * ((x - 0.5) / SIGMA) ** 2 - jnp.log(SIGMA) - 0.5 * jnp.log(2 * jnp.pi))


def identity(u):
    return u


def box_log_z(dim):
    return dim * float(np.log(ndtr(0.5 / SIGMA) - ndtr(-0.5 / SIGMA)))


@pytest.fixture(scope="module")
def box_run():
    return pi.evidence(box_loglikelihood, prior_transform=identity, dim=2, method="ns", **QUIET)


def test_gaussian_box_evidence_and_posterior(box_run):
    truth = box_log_z(2)
    assert abs(box_run.log_z - truth) < Z_T * box_run.log_z_err, (box_run.log_z, truth)
    assert not abs(box_run.log_z - (truth + 0.5)) < Z_T * box_run.log_z_err  # can fail
    x = box_run.idata.posterior["x"].values  # (1, draws, 2), equally weighted
    assert x.shape[:2] == (1, round(box_run.idata.attrs["ess"]))
    # The truncation at 0 and 1 is 5 sd away: mean 0.5, sd 0.1 to 1e-5.
    checks = [check_expectation(x[..., i], 0.5, name=f"mean[{i}]", iid=True) for i in range(2)]
    checks += [
        check_expectation((x[..., i] - 0.5) ** 2, SIGMA**2, name=f"var[{i}]", iid=True)
        for i in range(2)
    ]
    assert_checks(checks)
    assert not check_expectation(x[..., 0], 0.5 + 0.3 * SIGMA, name="shifted", iid=True).ok
    # Weighted points: every dead point and the final live ones, weights normalised.
    weights = np.exp(box_run.log_weights)
    assert box_run.weighted_draws["x"].shape == (weights.size, 2)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-4)
    assert box_run.num_likelihood_evals == box_run.idata.attrs["num_likelihood_evals"]
    # The default on a unit cube: replacements from the ellipsoid (a Gaussian's contours
    # are ellipses, so it bounds them tightly throughout).
    attrs = box_run.idata.attrs
    assert attrs["bound"] == "ellipsoid"
    assert attrs["num_bounded_iterations"] == attrs["num_iterations"]


def two_modes_loglikelihood(x):
    """0.3 N((-2, -2), 0.3^2 I) + 0.7 N((2, 2), 0.3^2 I) on U(-5, 5)^2: Z = 1 / 100."""
    scale = 0.3
    log_norm = -jnp.log(2 * jnp.pi * scale**2)
    first = jnp.log(0.3) + jnp.sum(-0.5 * ((x + 2) / scale) ** 2) + log_norm
    second = jnp.log(0.7) + jnp.sum(-0.5 * ((x - 2) / scale) ** 2) + log_norm
    return jnp.logaddexp(first, second)


def ten_wide_box(u):
    return 10.0 * u - 5.0


def test_two_separated_modes_are_both_found_with_their_mass():
    result = pi.evidence(
        two_modes_loglikelihood, prior_transform=ten_wide_box, dim=2, method="ns", seed=1, **QUIET
    )
    assert abs(result.log_z - np.log(0.01)) < Z_T * result.log_z_err, result.log_z
    x = result.idata.posterior["x"].values[0]
    in_first = (x[:, 0] < 0).astype(float)
    check = check_expectation(in_first, 0.3, name="mass of the first mode", iid=True)
    assert_checks([check])
    assert not check_expectation(in_first, 0.5, name="equal modes", iid=True).ok


SHELL_CENTRES = jnp.array([[-3.5, 0.0], [3.5, 0.0]])


def shells_loglikelihood(x):
    """Two Gaussian shells (radius 2, width 0.1) on U(-6, 6)^2 (Feroz & Hobson, 2008)."""
    distance = jnp.linalg.norm(x[None, :] - SHELL_CENTRES, axis=1)
    width = 0.1
    return logsumexp(-0.5 * ((distance - 2.0) / width) ** 2 - 0.5 * jnp.log(2 * jnp.pi * width**2))


def twelve_wide_box(u):
    return 12.0 * u - 6.0


@functools.cache
def shells_log_z():
    """log Z of the shells by float64 grid integration over the prior box (~ -1.746);
    computed once, when a test first needs it (not at import)."""
    grid = np.linspace(-6.0, 6.0, 3001)
    points = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    values = np.asarray(jax.jit(jax.vmap(shells_loglikelihood))(jnp.asarray(points)), np.float64)
    spacing = grid[1] - grid[0]
    return float(logsumexp(values) + np.log(spacing**2 / 144.0))


def test_gaussian_shells_evidence_matches_grid_integration():
    truth = shells_log_z()
    result = pi.evidence(
        shells_loglikelihood, prior_transform=twelve_wide_box, dim=2, method="ns", **QUIET
    )
    assert abs(result.log_z - truth) < Z_T * result.log_z_err, (result.log_z, truth)
    assert not abs(result.log_z - (truth - 0.5)) < Z_T * result.log_z_err


@pytest.mark.slow  # a long statistical check (16 s): `make test-slow`
def test_numpyro_linear_regression_evidence_and_posterior():
    """The zoo's 6-d regression (exact log Z ~ -96.06 and posterior) through NumPyro."""
    args, kwargs = linear_regression.data()
    reference = linear_regression.reference
    result = pi.evidence(linear_regression.model, *args, method="ns", seed=2, **kwargs, **QUIET)
    assert abs(result.log_z - reference.log_z) < Z_T * result.log_z_err, result.log_z
    posterior = result.idata.posterior
    checks = [
        check_expectation(
            posterior["b"].values, float(reference.moments["b"].mean), name="b", iid=True
        )
    ]
    w = posterior["w"].values
    checks += [
        check_expectation(
            w[..., i], float(reference.moments["w"].mean[i]), name=f"w[{i}]", iid=True
        )
        for i in range(w.shape[-1])
    ]
    assert_checks(checks)


def gaussian_logprior(position, y):
    """N(0, 4 I) on a pytree position {"a": (2,), "b": ()}."""
    flat = jnp.concatenate([position["a"], position["b"][None]])
    return jnp.sum(-0.5 * (flat / 2.0) ** 2 - jnp.log(2.0) - 0.5 * jnp.log(2 * jnp.pi))


def gaussian_loglikelihood(position, y):
    flat = jnp.concatenate([position["a"], position["b"][None]])
    return jnp.sum(-0.5 * (y - flat) ** 2 - 0.5 * jnp.log(2 * jnp.pi))


def gaussian_prior_draw(key):
    draw = 2.0 * jax.random.normal(key, (3,))
    return {"a": draw[:2], "b": draw[2]}


PYTREE_TARGET = pi.LogDensity(
    init={"a": jnp.zeros(2), "b": jnp.zeros(())},
    logprior_fn=gaussian_logprior,
    loglikelihood_fn=gaussian_loglikelihood,
    sample_prior_fn=gaussian_prior_draw,
)
Y = jnp.array([0.5, -1.0, 2.0])
SMALL = {"live_points": 200, **QUIET}


def test_pytree_positions_and_exact_conjugate_evidence():
    result = pi.evidence(PYTREE_TARGET, Y, method="ns", seed=3, **SMALL)
    truth = float(np.sum(-0.5 * np.asarray(Y) ** 2 / 5.0 - 0.5 * np.log(2 * np.pi * 5.0)))
    assert abs(result.log_z - truth) < Z_T * result.log_z_err, (result.log_z, truth)
    assert set(result.idata.posterior.data_vars) == {"a", "b"}
    assert result.idata.posterior["a"].shape[-1] == 2


def test_random_walk_move_also_finds_the_evidence():
    result = pi.evidence(PYTREE_TARGET, Y, method="ns", move="rwm", seed=4, **SMALL)
    truth = float(np.sum(-0.5 * np.asarray(Y) ** 2 / 5.0 - 0.5 * np.log(2 * np.pi * 5.0)))
    assert abs(result.log_z - truth) < Z_T * result.log_z_err, (result.log_z, truth)


def test_slice_moves_on_the_unit_cube_find_the_shells_evidence():
    """``bound="none"``: the MCMC moves alone on a unit-cube model (the default there draws
    from the ellipsoid where it can)."""
    result = pi.evidence(
        shells_loglikelihood, prior_transform=twelve_wide_box, dim=2, method="ns", seed=7,
        bound="none", **QUIET,
    )  # fmt: skip
    assert result.idata.attrs["bound"] == "none"
    assert result.idata.attrs["num_bounded_iterations"] == 0
    assert abs(result.log_z - shells_log_z()) < Z_T * result.log_z_err, result.log_z


# ---------------------------------------------------------------------------------------
# The ellipsoidal bound


def test_ellipsoid_draws_are_uniform_inside_it():
    """20,000 draws from a 3-d ellipsoid: all inside, and in whitened coordinates ``v`` the
    volume fraction ``|v|^3`` is uniform (mean 1/2) and each coordinate has variance
    1 / (d + 2) = 0.2 (a uniform ball's), each within 4 standard errors; a radius
    distributed as in a Gaussian ball (not uniform) would fail."""
    transform = jnp.array([[0.3, 0.0, 0.0], [0.1, 0.2, 0.0], [-0.05, 0.02, 0.1]])
    ellipsoid = ns.Ellipsoid(jnp.array([0.5, 0.4, 0.6]), transform, jnp.zeros(()))
    draws = ns.sample_ellipsoid(jax.random.key(0), ellipsoid, 20_000)
    whitened = np.asarray(
        jax.scipy.linalg.solve_triangular(
            transform, (draws - ellipsoid.center[None, :]).T, lower=True
        ).T,
        np.float64,
    )
    radius = np.linalg.norm(whitened, axis=1)
    assert radius.max() <= 1.0 + 1e-5
    checks = [check_expectation(radius**3, 0.5, name="volume fraction", iid=True)]
    checks += [
        check_expectation(whitened[:, i] ** 2, 0.2, name=f"var[{i}]", iid=True) for i in range(3)
    ]
    assert_checks(checks)
    assert not check_expectation(radius**3, 0.55, name="shifted", iid=True).ok


def test_bounding_ellipsoid_encloses_the_points_with_the_stated_volume():
    """Around 500 points uniform in a 4-d ellipsoid: every point inside the bound, its
    volume at least the true one and its log volume the unit ball's plus
    ``log |det transform|``."""
    dim = 4
    true_transform = jnp.diag(jnp.array([0.05, 0.1, 0.2, 0.4]))
    true = ns.Ellipsoid(jnp.full(dim, 0.5), true_transform, jnp.zeros(()))
    points = ns.sample_ellipsoid(jax.random.key(1), true, 500)
    bound = ns.bounding_ellipsoid(jax.random.key(2), points, 1.25)
    whitened = jax.scipy.linalg.solve_triangular(
        bound.transform, (points - bound.center[None, :]).T, lower=True
    )
    assert float(jnp.max(jnp.linalg.norm(whitened, axis=0))) <= 1.0
    log_unit_ball = 0.5 * dim * np.log(np.pi) - float(jax.scipy.special.gammaln(dim / 2 + 1))
    true_log_volume = log_unit_ball + float(jnp.sum(jnp.log(jnp.diag(true_transform))))
    expected = log_unit_ball + float(jnp.linalg.slogdet(bound.transform)[1])
    np.testing.assert_allclose(float(bound.log_volume), expected, rtol=1e-5)
    # Enclosing 500 points: at least the true volume; the margin 1.25 and the expansion
    # keep it within a few times it.
    assert true_log_volume < float(bound.log_volume) < true_log_volume + np.log(4.0)


def _disk_terms(x):
    """Log prior of the unit square and log L = -|x - 0.5|^2."""
    inside = jnp.all((x >= 0) & (x <= 1))
    return jnp.where(inside, 0.0, -jnp.inf), -jnp.sum((x - 0.5) ** 2)


def test_draws_above_a_contour_are_uniform_inside_it():
    """The contour ``|x - 0.5| < 0.2`` inside the ellipsoid ``|x - 0.5| < 0.3``: 2,000 draws
    fill every slot, lie inside the disk with ``E|x - 0.5|^2 = 0.2^2 / 2`` (uniform), and
    the acceptance estimates the area ratio 4/9 within 4 binomial standard errors."""
    ellipsoid = ns.Ellipsoid(jnp.full(2, 0.5), 0.3 * jnp.eye(2), jnp.zeros(()))
    draws = ns.draw_above_contour(
        jax.random.key(3),
        lambda key, num: ns.sample_ellipsoid(key, ellipsoid, num),
        _disk_terms,
        jnp.asarray(-0.04),
        2000,
        100,
    )
    assert bool(jnp.all(draws.is_filled)) and int(draws.num_nonfinite) == 0
    squared = np.sum((np.asarray(draws.positions, np.float64) - 0.5) ** 2, axis=1)
    assert squared.max() < 0.04
    checks = [check_expectation(squared, 0.02, name="E|x - c|^2", iid=True)]
    assert not check_expectation(squared, 0.022, name="shifted", iid=True).ok
    assert_checks(checks)
    accepted, proposed = int(draws.num_accepted), int(draws.num_evals)
    rate = 4.0 / 9.0
    assert abs(accepted / proposed - rate) < Z * np.sqrt(rate * (1 - rate) / proposed)
    # A contour nothing reaches: no slot filled after the rounds allowed, all counted.
    none = ns.draw_above_contour(
        jax.random.key(4),
        lambda key, num: ns.sample_ellipsoid(key, ellipsoid, num),
        _disk_terms,
        jnp.asarray(1.0),
        10,
        3,
    )
    assert not bool(jnp.any(none.is_filled)) and int(none.num_evals) == 30


def test_slots_the_bound_leaves_empty_are_filled_by_moves():
    """With one round of proposals per iteration, most bounded iterations leave slots empty
    (the acceptance is below 1): MCMC moves fill them, every new point lies above its
    contour, and the run still reaches the box's evidence."""
    target = Target.from_parts(lambda x: _disk_terms(x)[0], box_loglikelihood)
    sampler = ns.nested_sampling(
        target, mcmc.slice_sampler, num_delete=10, num_steps=10, step_size=2.0,
        bound="ellipsoid", max_bound_rounds=1,
    )  # fmt: skip
    step = jax.jit(sampler.step)
    state, _ = sampler.init(jax.random.uniform(jax.random.key(5), (100, 2)))
    dead, completed = [], 0
    for i in range(400):
        state, info = step(jax.random.key(100 + i), state)
        assert bool(jnp.all(state.loglikelihood >= info.dead_loglikelihood[-1]))
        dead.append(np.asarray(info.dead_loglikelihood))
        # One round is 10 proposals: more evaluations mean moves filled slots.
        completed += int(info.is_bounded) * int(info.num_evals > 10)
        if float(info.remaining_log_fraction) < np.log(0.01):
            break
    assert completed > 10, completed
    loglikelihood = np.concatenate(dead + [np.sort(np.asarray(state.loglikelihood))])
    counts = ns.removal_counts(100, 10, len(dead))
    summary = ns.summarize(jax.random.key(6), jnp.asarray(loglikelihood), counts)
    assert abs(float(summary.log_z) - box_log_z(2)) < Z_T * float(summary.log_z_err)


# ---------------------------------------------------------------------------------------
# Contracts


def test_same_seed_same_result_and_a_second_call_compiles_nothing(count_compilations):
    new_data = Y + 0.5
    first = pi.evidence(PYTREE_TARGET, Y, method="ns", seed=5, **SMALL)
    count_compilations.clear()
    again = pi.evidence(PYTREE_TARGET, Y, method="ns", seed=5, **SMALL)
    pi.evidence(PYTREE_TARGET, new_data, method="ns", seed=6, **SMALL)
    assert count_compilations == [], f"{len(count_compilations)} XLA compilations"
    assert again.log_z == first.log_z
    np.testing.assert_array_equal(
        again.idata.posterior["a"].values, first.idata.posterior["a"].values
    )


def test_step_jit_and_no_jit_agree():
    target = Target.from_parts(
        lambda x: jnp.where(jnp.all((x > 0) & (x < 1)), 0.0, -jnp.inf), box_loglikelihood
    )
    sampler = ns.nested_sampling(
        target, mcmc.slice_sampler, num_delete=5, num_steps=2, step_size=2.0
    )
    state, _ = sampler.init(jax.random.uniform(jax.random.key(0), (40, 2)))
    eager_state, eager_info = sampler.step(jax.random.key(1), state)
    jit_state, jit_info = jax.jit(sampler.step)(jax.random.key(1), state)
    np.testing.assert_allclose(eager_state.positions, jit_state.positions, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(eager_info.dead_loglikelihood, jit_info.dead_loglikelihood)
    # Every new point lies above the contour, and the dead are the worst five.
    threshold = eager_info.dead_loglikelihood[-1]
    assert bool(jnp.all(eager_state.loglikelihood > threshold))
    np.testing.assert_array_equal(eager_info.dead_loglikelihood, jnp.sort(state.loglikelihood)[:5])


@pytest.mark.optimized  # the emulator's training runs, it does not compile
@pytest.mark.parametrize(
    "emulator",
    [None, pytest.param(True, marks=pytest.mark.slow)],  # suite time: the emulator, 24 s
    ids=["plain", "emulator"],
)
def test_interrupted_run_resumes_exactly(tmp_path, interrupt_after, emulator):
    settings = {**SMALL, "chunk_size": 5, "emulator": emulator}
    full = pi.evidence(PYTREE_TARGET, Y, method="ns", seed=7, **settings)
    with interrupt_after(2):
        pi.evidence(PYTREE_TARGET, Y, method="ns", seed=7, checkpoint=tmp_path, **settings)
    resumed = pi.evidence(PYTREE_TARGET, Y, method="ns", seed=7, checkpoint=tmp_path, **settings)
    assert resumed.log_z == full.log_z
    np.testing.assert_array_equal(resumed.log_weights, full.log_weights)


def test_sample_with_ns_gives_equally_weighted_draws_as_one_chain():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    idata = pi.sample(model, Y, method="ns", draws=300, live_points=200, progress=False)
    assert idata.posterior["mu"].shape == (1, 300)
    assert idata.attrs["method"] == "ns" and np.isfinite(idata.attrs["log_z"])


# ---------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "settings",
    # The emulator's training runs, it does not compile: fully optimized. Suite time: 21 s.
    [{}, pytest.param({"emulator": True}, marks=[pytest.mark.slow, pytest.mark.optimized])],
    ids=["bound", "emulator"],
)
def test_runs_in_float64(settings):
    """With ``jax_enable_x64`` (some likelihoods need it) the counters stay int32 in every
    branch (the bound's rejection loop, the moves that complete it, the emulator's
    re-moves), the points are float64 and log Z is the box's."""
    with jax.enable_x64(True):
        result = pi.evidence(
            box_loglikelihood, prior_transform=identity, dim=2, method="ns", live_points=100,
            **settings, **QUIET,
        )  # fmt: skip
    assert result.weighted_draws["x"].dtype == np.float64
    assert abs(result.log_z - box_log_z(2)) < Z_T * result.log_z_err, result.log_z


@pytest.mark.parametrize(
    ("settings", "error", "match"),
    [
        ({"live_points": 3}, ValueError, r"fewer than the dimension \+ 1 = 4"),
        ({"num_delete": 200}, ValueError, "must be smaller than `live_points"),
        ({"remaining_fraction": 1.5}, ValueError, "remaining_fraction"),
        ({"move": "nuts"}, ValueError, "`move` must be one of"),
        ({"max_num_steps_out": 4, "move": "rwm"}, TypeError, "not options of move 'rwm'"),
        ({"num_steps": 0}, ValueError, "num_steps"),
        ({"live_pionts": 100}, TypeError, "unknown keyword `live_pionts`"),
        ({"bound": "ellipsoid"}, ValueError, "needs the uniform prior of the unit cube"),
        ({"bound": "multi"}, ValueError, "`bound` must be 'ellipsoid' or 'none'"),
    ],
    ids=[
        "live-points", "num-delete", "fraction", "move", "option", "steps", "misspelled",
        "bound-prior", "bound-name",
    ],
)  # fmt: skip
def test_bad_settings_are_refused(settings, error, match):
    with pytest.raises(error, match=match):
        pi.evidence(PYTREE_TARGET, Y, method="ns", **{**SMALL, **settings})


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"enlarge": 0.5}, r"`enlarge` must be >= 1"),
        ({"bound": "ellipsoid", "emulator": True}, "do not combine"),
    ],
    ids=["enlarge", "emulator"],
)
def test_bad_bound_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        pi.evidence(
            box_loglikelihood, prior_transform=identity, dim=2, method="ns", **settings, **QUIET
        )


def test_bad_prior_transforms_are_refused():
    def standard_normal_input(u):  # written for z ~ N(0, 1), not for u in the cube
        return jnp.log(u - 0.5)

    with pytest.raises(ValueError, match=r"not finite at u = .*ndtri"):
        pi.evidence(box_loglikelihood, prior_transform=standard_normal_input, dim=2, method="ns")
    with pytest.raises(TypeError, match="`prior_transform` and `dim` come together"):
        pi.evidence(box_loglikelihood, prior_transform=identity, method="ns")
    with pytest.raises(ValueError, match="`dim` must be an int >= 1"):
        pi.evidence(box_loglikelihood, prior_transform=identity, dim=0, method="ns")


def test_nan_log_likelihoods_are_counted_and_reported():
    """A likelihood that is NaN for x0 > 0.9 (4 sd into the Gaussian's tail) is treated as
    zero there and warned about: log Z stays the box's (the tail holds ~3e-5 of it), and
    the count covers at least the prior draws there (~10% of 500 live points)."""

    def nan_right(x):
        return jnp.where(x[0] > 0.9, jnp.nan, box_loglikelihood(x))

    with pytest.warns(UserWarning, match=r"(\d+) log likelihoods were NaN") as record:
        result = pi.evidence(nan_right, prior_transform=identity, dim=2, method="ns", **QUIET)
    assert abs(result.log_z - box_log_z(2)) < Z_T * result.log_z_err
    count = int(str(record[0].message).split()[0])
    assert count > 500 * 0.1 - 5 * np.sqrt(500 * 0.1 * 0.9), count


def test_zero_likelihood_everywhere_is_a_readable_error():
    def nowhere(x):
        return -jnp.inf * jnp.sum(x + 1.0)

    with pytest.raises(RuntimeError, match="zero likelihood"):
        pi.evidence(nowhere, prior_transform=identity, dim=2, method="ns", **QUIET)


def test_targets_without_a_split_or_prior_draws_are_refused():
    unsplit = pi.LogDensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    with pytest.raises(ValueError, match="sample_prior_fn"):
        pi.evidence(unsplit, method="ns", **QUIET)
    no_prior_draws = pi.LogDensity(
        init=jnp.zeros(2), logprior_fn=lambda x: 0.0 * jnp.sum(x), loglikelihood_fn=jnp.sum
    )
    with pytest.raises(ValueError, match="sample_prior_fn"):
        pi.evidence(no_prior_draws, method="ns", **QUIET)


# ---------------------------------------------------------------------------------------
# The likelihood emulator


def test_emulator_learns_a_quadratic_log_likelihood():
    """Trained (default settings) on 400 live points of a 3-d quadratic filling a contour
    1.5 sd out (log L spread 0.6 nats; an empty buffer), the held-out error falls below the
    default tolerance of 0.1 nats and below a tenth of the untrained network's error.
    Measured: 0.022 nats (500 steps: 0.014; on the whole cube, spread 6.6 nats: 0.16)."""
    settings = ns.Emulator()
    key_points, key_init, key_train = jax.random.split(jax.random.key(0), 3)
    positions = 0.35 + 0.3 * jax.random.uniform(key_points, (400, 3))
    loglikelihood = jax.vmap(box_loglikelihood)(positions)
    state = ns.init_emulator(key_init, settings, 3, 400, positions.dtype)
    untrained = jax.vmap(ns.emulate(state.network, settings))(positions)
    untrained_error = float(jnp.sqrt(jnp.mean((untrained - loglikelihood) ** 2)))
    trained = jax.jit(ns.train_emulator, static_argnums=2)(
        key_train, state, settings, positions, loglikelihood
    )
    error = float(trained.held_out_error)
    assert error < settings.tolerance and error < 0.1 * untrained_error, (error, untrained_error)
    assert bool(trained.is_ready)


@pytest.mark.slow  # a long statistical check (10-20 s): `make test-slow`
def test_emulator_reaches_the_evidence_with_fewer_likelihood_calls():
    """The 5-d box: with the emulator, log Z is within 4 error bars of the truth while the
    run calls the likelihood less than half as often as the same slice moves without it
    (the moves run on the emulator once it is accurate; each new point costs one confirming
    call). The ellipsoidal bound, the default here, needs ~15x fewer calls still."""
    plain = pi.evidence(
        box_loglikelihood, prior_transform=identity, dim=5, method="ns", bound="none", **QUIET
    )
    emulated = pi.evidence(
        box_loglikelihood, prior_transform=identity, dim=5, method="ns", emulator=True, **QUIET
    )
    truth = box_log_z(5)
    assert abs(emulated.log_z - truth) < Z_T * emulated.log_z_err, (emulated.log_z, truth)
    attrs = emulated.idata.attrs
    assert attrs["num_emulated_iterations"] > 0 and attrs["num_emulator_evals"] > 0
    assert emulated.num_likelihood_evals < 0.5 * plain.num_likelihood_evals, (
        emulated.num_likelihood_evals,
        plain.num_likelihood_evals,
    )
