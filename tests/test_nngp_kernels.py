"""NNGP and NTK kernels: closed forms against quadrature, kernels against wide networks.

References: the arc-cosine and erf expectations are checked against adaptive 2-d quadrature
(SciPy ``dblquad``, independent of our code) to 1e-7; the full recursions against the
output covariance and empirical NTK of random finite-width networks, with tolerances of
z = 4 Monte Carlo standard errors (the finite-width bias, O(1/width), is far below them).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from scipy import integrate
from scipy.special import erf as scipy_erf

from probinfer import nngp
from probinfer.nngp import KernelState
from probinfer.nngp._kernel import input_state, resolve_layer

# Thousands of random wide networks: these tests spend their time running, not compiling.
pytestmark = pytest.mark.optimized

Z = 4.0
COVARIANCES = [(1.3, 0.7, 0.5), (2.0, 2.0, -1.9), (0.4, 3.0, 0.0), (1.0, 1.0, 0.999)]


def _gaussian_expectation(fn, k11, k22, k12, lower=-np.inf):
    """E[fn(u) fn(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]) by SciPy dblquad."""
    cov = np.array([[k11, k12], [k12, k22]])
    precision = np.linalg.inv(cov)
    norm = 2 * np.pi * np.sqrt(np.linalg.det(cov))
    bound = 12 * np.sqrt(max(k11, k22))

    def integrand(v, u):
        z = np.array([u, v])
        return fn(u) * fn(v) * np.exp(-0.5 * z @ precision @ z) / norm

    low = max(lower, -bound)
    value, _ = integrate.dblquad(integrand, low, bound, low, bound, epsabs=1e-11, epsrel=1e-10)
    return value


def _state(k11, k22, k12):
    return KernelState(jnp.array([k12]), jnp.array([k11]), jnp.array([k22]), jnp.ones(1))


@pytest.mark.parametrize("k11, k22, k12", COVARIANCES[:3])
def test_relu_and_erf_closed_forms_match_quadrature(k11, k22, k12):
    with jax.enable_x64(True):
        relu = nngp.ReLU().apply(_state(k11, k22, k12))
        relu_ref = _gaussian_expectation(lambda t: max(t, 0.0), k11, k22, k12, lower=0.0)
        relu_grad_ref = _gaussian_expectation(lambda t: float(t > 0), k11, k22, k12, lower=0.0)
        np.testing.assert_allclose(relu.cov[0], relu_ref, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(relu.ntk[0], relu_grad_ref, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(relu.var1[0], k11 / 2, rtol=1e-12)

        erf = nngp.Erf().apply(_state(k11, k22, k12))
        erf_ref = _gaussian_expectation(scipy_erf, k11, k22, k12)
        erf_grad_ref = _gaussian_expectation(
            lambda t: 2 / np.sqrt(np.pi) * np.exp(-(t**2)), k11, k22, k12
        )
        np.testing.assert_allclose(erf.cov[0], erf_ref, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(erf.ntk[0], erf_grad_ref, rtol=1e-7, atol=1e-9)
        var_ref, _ = integrate.quad(
            lambda t: scipy_erf(t) ** 2 * scipy.stats.norm.pdf(t, scale=np.sqrt(k11)),
            -np.inf,
            np.inf,
            epsabs=1e-12,
        )
        np.testing.assert_allclose(erf.var1[0], var_ref, rtol=1e-6)


@pytest.mark.parametrize("k11, k22, k12", COVARIANCES)
def test_elementwise_quadrature_matches_closed_forms(k11, k22, k12):
    """The trapezoidal rule is near-exact for smooth erf and converges for the ReLU kink."""
    with jax.enable_x64(True):
        state = _state(k11, k22, k12)
        exact = nngp.Erf().apply(state)
        approx = nngp.Elementwise(jax.scipy.special.erf, 128).apply(state)
        for a, b in zip(exact, approx, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
        exact = nngp.ReLU().apply(state)
        errors = [
            float(jnp.abs(nngp.Elementwise(jax.nn.relu, n).apply(state).cov - exact.cov)[0])
            for n in (8, 32, 128)
        ]
        # The kink limits the rule to algebraic convergence (below 2e-3 at 128 nodes).
        assert errors[2] <= errors[0] and errors[2] < 2e-3, errors


def _inputs():
    return jax.random.normal(jax.random.key(7), (4, 3))


STACKS = {
    "relu-depth2": nngp.mlp(2, activation="relu", weight_variance=1.8, bias_variance=0.2),
    "erf-depth2": nngp.mlp(2, activation="erf", weight_variance=2.5, bias_variance=0.1),
    "resnet": nngp.serial(
        nngp.dense(1.0, 0.1),
        nngp.residual(nngp.relu(), nngp.dense(1.5, 0.05)),
        nngp.relu(),
        nngp.dense(2.0, 0.1),
    ),
}


def _network_outputs(stack, x, *, num_networks, width, scales=None, seed=0):
    keys = jax.random.split(jax.random.key(seed), num_networks)
    scales = jnp.ones(num_networks) if scales is None else scales

    def outputs(key, scale):
        network = nngp.random_network(key, stack, x.shape[1], width=width, output_scale=scale)
        return jax.vmap(network)(x)[:, 0]

    return np.asarray(
        jax.lax.map(lambda a: outputs(*a), (keys, scales), batch_size=100), np.float64
    )


def _covariance_z_scores(outputs, kernel):
    """|mean(f_i f_j) - K_ij| / MCSE for every pair i <= j (networks are independent)."""
    i, j = np.triu_indices(kernel.shape[0])
    products = outputs[:, i] * outputs[:, j]
    mcse = products.std(axis=0, ddof=1) / np.sqrt(len(outputs))
    return np.abs(products.mean(axis=0) - kernel[i, j]) / mcse


@pytest.fixture(scope="module")
def wide_network_outputs():
    x = _inputs()
    return {
        name: _network_outputs(stack, x, num_networks=2000, width=256)
        for name, stack in STACKS.items()
    }


@pytest.mark.slow  # a long statistical check (2,000 networks per stack, 30 s): `make test-slow`
@pytest.mark.parametrize("name", sorted(STACKS))
def test_nngp_matches_wide_network_covariance(name, wide_network_outputs):
    """False-failure rate: 0/40 seeds per stack (10 z-scores each, z = 4)."""
    kernel = np.asarray(STACKS[name](_inputs()), np.float64)
    z_scores = _covariance_z_scores(wide_network_outputs[name], kernel)
    assert np.all(z_scores < Z), z_scores
    # The check can fail: a kernel 25% off in the output layer's weight variance.
    assert np.any(_covariance_z_scores(wide_network_outputs[name], 1.25 * kernel) > Z)


def test_ntk_matches_empirical_ntk_of_wide_networks():
    """The mean over networks of J(x) J(x')^T (NTK parameterisation) tends to the NTK."""
    stack = STACKS["relu-depth2"]
    x = _inputs()
    num_networks, width = 64, 256

    def empirical_ntk(key):
        network = nngp.random_network(key, stack, x.shape[1], width=width)
        # Trainable: the standard-normal weights and biases (the NTK parameterisation).
        trainable, frozen = eqx.partition(network, lambda p: eqx.is_array(p) and p.ndim > 0)

        def output(params, xi):
            return eqx.combine(params, frozen)(xi)[0]

        jac = jax.vmap(lambda xi: jax.grad(output)(trainable, xi))(x)
        leaves = jax.tree_util.tree_leaves(jac)
        flat = jnp.concatenate([j.reshape(x.shape[0], -1) for j in leaves], axis=1)
        return flat @ flat.T

    ntks = np.asarray(
        jax.lax.map(empirical_ntk, jax.random.split(jax.random.key(3), num_networks)),
        np.float64,
    )
    exact = np.asarray(stack.ntk(x), np.float64)
    mcse = ntks.std(axis=0, ddof=1) / np.sqrt(num_networks)
    assert np.all(np.abs(ntks.mean(axis=0) - exact) < Z * mcse)
    assert np.any(np.abs(ntks.mean(axis=0) - 1.25 * exact) > Z * mcse)


def test_inverse_gamma_scale_gives_student_t_marginals():
    """With s ~ InvGamma(a, b) per network, f(x) / sqrt((b/a) K(x, x)) ~ Student-t(2a).

    False-failure rate: 0/20 seeds (smallest p-value 0.055).
    """
    a, b = 2.0, 3.0
    stack = nngp.mlp(1, weight_variance=2.0, bias_variance=0.1)
    x = _inputs()[:1]
    num_networks = 4000
    scales = nngp.inverse_gamma(a, b).sample(jax.random.key(11), (num_networks,))
    outputs = _network_outputs(stack, x, num_networks=num_networks, width=512, scales=scales)
    standardized = outputs[:, 0] / np.sqrt(b / a * float(stack(x)[0, 0]))
    alpha = 5e-5  # the suite's per-assertion false-failure budget (z ~ 4)
    assert scipy.stats.kstest(standardized, scipy.stats.t(2 * a).cdf).pvalue > alpha
    assert scipy.stats.kstest(standardized, scipy.stats.norm.cdf).pvalue < alpha


def test_blocks_diagonal_and_jit_agree():
    x1 = jax.random.normal(jax.random.key(0), (37, 5))
    x2 = jax.random.normal(jax.random.key(1), (11, 5))
    kernel = nngp.mlp(3, activation="erf")
    full = kernel(x1, x2)
    assert full.shape == (37, 11)
    # Blocks compute the same entries in another order: equal to float64 rounding (in
    # float32 they differ by up to 1.3e-6 relative after three layers, measured).
    with jax.enable_x64(True):
        x1_64, x2_64 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
        full_64 = kernel(x1_64, x2_64)
        assert full_64.dtype == jnp.float64
        np.testing.assert_allclose(kernel(x1_64, x2_64, block_size=4), full_64, rtol=1e-12)
        np.testing.assert_allclose(kernel(x1_64, x2_64, block_size=100), full_64, rtol=1e-12)
    np.testing.assert_allclose(kernel.diagonal(x1), jnp.diagonal(kernel(x1)), rtol=1e-5)
    np.testing.assert_allclose(
        kernel.diagonal(x1, kind="ntk"), jnp.diagonal(kernel.ntk(x1)), rtol=1e-5
    )
    np.testing.assert_allclose(jax.jit(lambda k, a, b: k(a, b))(kernel, x1, x2), full, rtol=1e-6)
    assert np.all(np.linalg.eigvalsh(np.asarray(kernel(x1), np.float64)) > -1e-4)


def test_kernel_is_differentiable_in_its_variances():
    x = _inputs()

    def total(weight_variance):
        return jnp.sum(nngp.mlp(2, weight_variance=weight_variance, bias_variance=0.1)(x))

    grad = jax.grad(total)(2.0)
    eps = 1e-2
    finite_difference = (total(2.0 + eps) - total(2.0 - eps)) / (2 * eps)
    assert np.isfinite(grad)
    np.testing.assert_allclose(grad, finite_difference, rtol=1e-2)


def test_float64_kernels():
    with jax.enable_x64(True):
        x = jnp.ones((3, 2), jnp.float64)
        assert nngp.mlp(2)(x).dtype == jnp.float64


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: nngp.dense(-1.0), "weight_variance"),
        (lambda: nngp.dense(1.0, -0.1), "bias_variance"),
        (lambda: nngp.dense(float("nan")), "weight_variance"),
        (lambda: nngp.mlp(-1), "depth"),
        (lambda: nngp.mlp(2, activation="gelu"), "unknown activation"),
        (lambda: nngp.residual(nngp.relu()), "must end in a dense layer"),
        (lambda: nngp.serial(nngp.relu(), "dense"), "not a layer"),
        (lambda: nngp.mlp(1)(jnp.ones(3)), r"\(num_points, num_features\)"),
        (lambda: nngp.mlp(1)(jnp.ones((3, 2)), jnp.ones((3, 4))), "4 features but 2"),
        (lambda: nngp.mlp(1)(jnp.array([[0.0, jnp.nan]])), "NaN"),
        (lambda: nngp.random_network(jax.random.key(0), nngp.relu(), 2, width=4), "dense"),
    ],
)
def test_bad_input_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_gradients_stay_finite_at_zero_variance_and_for_quadrature_layers():
    """Review findings: padded zero rows (ReLU, no bias) and rho = 1 (Gauss-Hermite)."""
    x = jax.random.normal(jax.random.key(0), (5, 2))

    def relu_total(w):
        return jnp.sum(nngp.serial(nngp.dense(w), nngp.relu(), nngp.dense(w))(x, block_size=2))

    def traced_total(w):  # under grad the blocks run in one lax.map, padded to 6 rows
        return relu_total(w)

    def tanh_total(w):
        stack = nngp.serial(nngp.dense(w, 0.1), nngp.elementwise(jnp.tanh), nngp.dense(w, 0.1))
        return jnp.sum(stack(x))

    assert np.isfinite(jax.grad(traced_total)(1.5))
    assert np.isfinite(jax.grad(tanh_total)(1.5))
    zero_row = jnp.concatenate([x, jnp.zeros((1, 2))])
    assert np.isfinite(
        jax.grad(lambda w: jnp.sum(nngp.serial(nngp.dense(w), nngp.relu())(zero_row)))(1.0)
    )


def _relu_diagonal_reference(x, depth, w, b):
    """The exact ReLU NNGP and NTK of each input with itself (theta = 0), in float64."""
    var = np.sum(np.asarray(x, np.float64) ** 2, axis=-1) / x.shape[1]
    var = w * var + b
    ntk = var.copy()
    for _ in range(depth):
        var, ntk = var / 2, ntk / 2  # E[relu(u)^2] = k / 2; E[relu'(u)^2] = 1 / 2
        var = w * var + b
        ntk = w * ntk + var
    return var, ntk


@pytest.mark.parametrize("x64", [False, True])
def test_relu_kernels_are_exact_on_the_diagonal_and_for_duplicate_inputs(x64):
    """Duplicate rows and the diagonal: the angle is exactly 0, not sqrt(2 eps).

    With the correlation clipped at 1 - eps, the NTK was off by 3.3e-4 (float32) and
    1.1e-8 (float64) relative at depth 3; now by the input's rounding only.
    """
    depth, w, b = 3, 2.0, 0.05
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        x = jax.random.normal(jax.random.key(0), (6, 3), dtype)
        x = jnp.concatenate([x, x[:2]])  # rows 6 and 7 duplicate rows 0 and 1
        kernel = nngp.mlp(depth, activation="relu", weight_variance=w, bias_variance=b)
        var, ntk = _relu_diagonal_reference(x, depth, w, b)
        rtol = 8 * float(jnp.finfo(dtype).eps)
        ntk_matrix, nngp_matrix = np.asarray(kernel.ntk(x)), np.asarray(kernel(x))
        np.testing.assert_allclose(np.diag(ntk_matrix), ntk, rtol=rtol)
        np.testing.assert_allclose(np.diag(nngp_matrix), var, rtol=rtol)
        np.testing.assert_allclose(ntk_matrix[[6, 7], [0, 1]], ntk[:2], rtol=rtol)
        np.testing.assert_allclose(nngp_matrix[[6, 7], [0, 1]], var[:2], rtol=rtol)
        np.testing.assert_allclose(kernel.diagonal(x, kind="ntk"), ntk, rtol=rtol)
        # Many features: the dot product and the squared norm round differently (so the
        # band around +-1 is exercised), and the duplicate still gets the exact value.
        wide = jnp.concatenate([jax.random.normal(jax.random.key(2), (3, 784), dtype)] * 2)
        state = input_state(wide, wide)
        assert np.any(np.asarray(state.cov)[[3, 4, 5], [0, 1, 2]] != np.asarray(state.var1)[:3, 0])
        np.testing.assert_allclose(
            np.diag(np.asarray(kernel.ntk(wide)))[:3],
            np.asarray(kernel.ntk(wide))[[3, 4, 5], [0, 1, 2]],
            rtol=rtol,
        )
        # Negated inputs without bias: the angle is exactly pi, so the ReLU covariance is 0.
        antipodal = nngp.serial(nngp.dense(w), nngp.relu())(jnp.stack([x[0], -x[0]]))
        assert float(antipodal[0, 1]) == 0.0


def test_erf_kernel_is_accurate_for_small_norm_inputs():
    """arcsin(x) as pi/2 - arccos(x) cancelled: 6.8e-5 normalised error in float32 then."""
    kernel = nngp.mlp(2, activation="erf", weight_variance=1.0, bias_variance=0.0)
    x = 1e-3 * jax.random.normal(jax.random.key(1), (5, 3))
    with jax.enable_x64(True):
        reference = np.asarray(kernel(jnp.asarray(x, jnp.float64)))
    approx = np.asarray(kernel(x))
    scale = np.sqrt(np.outer(np.diag(reference), np.diag(reference)))
    normalised = np.abs(approx - reference) / scale
    assert normalised.max() < 4 * np.finfo(np.float32).eps, normalised.max()


@pytest.mark.parametrize("variance", [1.0, 30.0, 1000.0])
def test_automatic_quadrature_meets_its_tolerance_over_the_documented_range(variance):
    """erf by quadrature against the closed form, up to pre-activation variance 1,000.

    With 32 Gauss-Hermite nodes the error was 1e-3 to 7e-2 from variance 5 up.
    """
    correlations = jnp.asarray([-0.5, 0.3, 0.9, 0.999, 0.99999, 1.0])
    with jax.enable_x64(True):
        x = jnp.eye(2)  # input variance 1/2 each, correlation 0
        for correlation in correlations:
            rows = jnp.stack([x[0], correlation * x[0] + jnp.sqrt(1 - correlation**2) * x[1]])
            dense = nngp.dense(2 * variance)
            exact = nngp.serial(dense, nngp.erf())
            quadrature = nngp.serial(dense, nngp.elementwise(jax.scipy.special.erf))
            np.testing.assert_allclose(quadrature(rows), exact(rows), atol=1e-6)
            np.testing.assert_allclose(quadrature.ntk(rows), exact.ntk(rows), atol=1e-6)


def test_quadrature_matches_an_independent_reference_for_tanh():
    """The issue's case: tanh at variance 10, correlation 0.95 (Monte Carlo 0.6858 +- 2e-4)."""
    with jax.enable_x64(True):
        state = KernelState(jnp.array([9.5]), jnp.array([10.0]), jnp.array([10.0]), jnp.ones(1))
        layer, _ = nngp.Elementwise(jnp.tanh).resolve(state)
        reference = _gaussian_expectation(np.tanh, 10.0, 10.0, 9.5)
        np.testing.assert_allclose(layer.apply(state).cov[0], reference, atol=1e-7)
        assert layer.num_points == 129


def test_quadrature_warns_when_explicit_nodes_are_too_few_and_uses_fixed_nodes_when_traced():
    x = jnp.eye(2)  # input variance 1/2: pre-activation variance 10 and 30 below
    too_few = nngp.serial(nngp.dense(20.0), nngp.elementwise(jnp.tanh, num_points=32))
    with pytest.warns(UserWarning, match="quadrature error is about .* with 32 nodes") as caught:
        too_few(x)
    assert caught[0].filename == __file__  # attributed to the caller, not to probinfer
    automatic = nngp.serial(nngp.dense(60.0), nngp.elementwise(jnp.tanh))
    assert resolve_layer(automatic, x).layers[1].num_points == 257  # chosen from variance 30
    fixed = nngp.serial(nngp.dense(60.0), nngp.elementwise(jnp.tanh, num_points=129))
    traced = jax.jit(lambda rows: automatic(rows))(x)
    np.testing.assert_array_equal(traced, jax.jit(lambda rows: fixed(rows))(x))
    assert not np.array_equal(traced, automatic(x))
    # Concrete inputs closed over inside an outer jit are staged: no node choice, no error.
    scaled = jax.jit(lambda scale: scale * automatic(x))(2.0)
    np.testing.assert_array_equal(scaled, 2 * traced)
    assert automatic(jnp.zeros((0, 2))).shape == (0, 0)
