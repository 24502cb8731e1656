"""Bad input fails early with the right error type and a message that names the problem."""

import re

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import pytest

import probinfer as pi
from probinfer import mcmc
from probinfer.diagnostics import SamplingWarning

QUICK = {"chains": 2, "warmup": 10, "draws": 10, "progress": False}


def normal_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def std_normal(x):
    return -0.5 * jnp.sum(x**2)


# ---------------------------------------------------------------------------------------
# Model sites


def discrete_model():
    numpyro.sample("num_components", dist.Poisson(3.0))


def param_model():
    loc = numpyro.param("loc_param", 0.0)
    numpyro.sample("z", dist.Normal(loc, 1.0))


def delta_model():
    numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("pinned", dist.Delta(1.0))


@pytest.mark.parametrize(
    ("model", "site", "hint"),
    [
        (discrete_model, "num_components", "discrete"),
        (param_model, "loc_param", "param"),
        (delta_model, "pinned", "Delta"),
    ],
    ids=["discrete", "param", "delta"],
)
def test_unsupported_latent_sites_are_named(model, site, hint):
    with pytest.raises(ValueError, match=rf"(?s)'{site}'.*{hint}"):
        pi.sample(model, **QUICK)
    with pytest.raises(ValueError, match=f"'{site}'"):
        pi.from_numpyro(model)


def nan_data_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("obs_y", dist.Normal(mu, 1.0), obs=y)


def support_model(y):
    rate = numpyro.sample("rate", dist.HalfNormal(1.0))
    numpyro.sample("waiting_time", dist.Gamma(2.0, rate), obs=y)


@pytest.mark.parametrize(
    ("model", "data", "site"),
    [
        (nan_data_model, jnp.array([0.1, jnp.nan]), "obs_y"),
        (support_model, jnp.array([1.0, -2.0]), "waiting_time"),  # log of a negative time
    ],
    ids=["nan-data", "outside-support"],
)
def test_no_finite_initial_point_names_the_site(model, data, site):
    with pytest.raises(ValueError, match=rf"(?s)finite.*{site}"):
        pi.sample(model, data, **QUICK)


# ---------------------------------------------------------------------------------------
# init_positions


def test_init_positions_with_wrong_structure():
    with pytest.raises(ValueError, match=r"(?s)`init_positions`.*structure"):
        pi.sample(normal_model, jnp.ones(3), init_positions={"sigma": jnp.zeros(2)}, **QUICK)


def test_init_positions_with_wrong_leading_shape():
    with pytest.raises(ValueError, match=r"(?s)`init_positions`.*shape.*\(3,\).*\(2,\)"):
        pi.sample(normal_model, jnp.ones(3), init_positions={"mu": jnp.zeros(3)}, **QUICK)


def test_init_positions_with_nonfinite_value_names_the_chain():
    with pytest.raises(ValueError, match=r"(?s)chain 1.*not finite"):
        pi.sample(
            normal_model, jnp.ones(3), init_positions={"mu": jnp.array([0.0, jnp.nan])}, **QUICK
        )


# ---------------------------------------------------------------------------------------
# LogDensity


def test_log_density_must_return_a_scalar():
    with pytest.raises(TypeError, match=r"(?s)scalar.*\(3,\)"):
        pi.LogDensity(lambda x: -0.5 * x**2, jnp.zeros(3))


def test_log_density_init_must_be_floating_point():
    with pytest.raises(TypeError, match=r"(?s)'?counts'?.*int32.*floating"):
        pi.LogDensity(lambda p: -jnp.sum(p["counts"] ** 2), {"counts": jnp.zeros(3, jnp.int32)})


def test_log_density_without_data_parameters_rejects_data():
    target = pi.LogDensity(std_normal, jnp.zeros(2))
    with pytest.raises(TypeError, match=r"(?s)LogDensity.*1 data argument.*fn\(position, \*data\)"):
        pi.sample(target, jnp.ones(3), **QUICK)


# ---------------------------------------------------------------------------------------
# Settings


def test_unknown_method():
    with pytest.raises(ValueError, match=r"(?s)'gibbs'.*nuts"):
        pi.sample(normal_model, jnp.ones(3), method="gibbs", **QUICK)


def test_unknown_keyword_names_it():
    with pytest.raises(TypeError, match=r"(?s)`max_tree_depth`.*max_num_doublings"):
        pi.sample(normal_model, jnp.ones(3), max_tree_depth=5, **QUICK)


@pytest.mark.parametrize("chains", [0, -1, 2.0, True])
def test_chains_must_be_a_positive_int(chains):
    settings = {**QUICK, "chains": chains}
    with pytest.raises(ValueError, match=rf"`chains`.*{re.escape(repr(chains))}"):
        pi.sample(normal_model, jnp.ones(3), **settings)


@pytest.mark.parametrize(("name", "value"), [("warmup", -1), ("draws", 0)])
def test_warmup_and_draws_must_be_counts(name, value):
    settings = {**QUICK, name: value}
    with pytest.raises(ValueError, match=f"`{name}`"):
        pi.sample(normal_model, jnp.ones(3), **settings)


def test_non_positive_step_size_to_sample():
    with pytest.raises(ValueError, match=r"`step_size`.*-0\.5"):
        pi.sample(normal_model, jnp.ones(3), step_size=-0.5, **QUICK)


@pytest.mark.parametrize("step_size", [0.0, -0.1])
@pytest.mark.parametrize("name", ["rwm", "mala", "hmc", "nuts"])
def test_non_positive_step_size_to_kernel_factory(name, step_size):
    with pytest.raises(ValueError, match=rf"`step_size` must be > 0, got {step_size}"):
        mcmc.ALGORITHMS[name](std_normal, step_size)


def test_non_positive_concrete_array_step_size_to_kernel_factory():
    """A concrete (not traced) JAX array is checked like a float."""
    with pytest.raises(ValueError, match=r"`step_size` must be > 0"):
        mcmc.nuts(std_normal, jnp.asarray(-0.1))


def test_unknown_kernel_option_is_named():
    with pytest.raises(ValueError, match=r"(?s)max_depth.*max_num_doublings"):
        mcmc.nuts(std_normal, 0.1, max_depth=3)


@pytest.mark.parametrize("value", [0, -2, 2.5])
def test_max_num_doublings_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match="`max_num_doublings`"):
        mcmc.nuts(std_normal, 0.1, max_num_doublings=value)


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5])
def test_target_acceptance_must_be_in_unit_interval(target):
    with pytest.raises(ValueError, match="`target_acceptance`"):
        mcmc.window_adaptation(mcmc.nuts, std_normal, target_acceptance=target)
    with pytest.raises(ValueError, match="`target_acceptance`"):
        pi.sample(normal_model, jnp.ones(3), target_acceptance=target, **QUICK)


def test_runs_beyond_int32_steps_are_refused_before_compiling():
    with pytest.raises(ValueError, match=r"`draws` x `thin` = 2,147,483,648 transitions"):
        pi.sample(normal_model, jnp.ones(3), chains=1, draws=2**29, thin=4, progress=False)

    def step(key, state, index, shared):
        return state, state

    start = (step, jnp.zeros(()), jax.random.key(0))
    with pytest.raises(ValueError, match=r"counts its steps in int32: 2,147,483,648 steps"):
        pi.driver.drive(*start, num_steps=2**31)
    with pytest.raises(ValueError, match=r"counts its steps in int32: 4,294,967,296 steps"):
        pi.driver.drive(*start, num_steps=0, chunk_size=2**16, thin=2**16, chunk_rows=2**16)
    # A chunk of one group of a large `thin` is fine (only its rows x thin count).
    pi.driver.drive(*start, num_steps=0, chunk_size=50_000, thin=50_000)


def subsampled_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0], subsample_size=2) as index:
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y[index])


def test_subsampling_plate_is_refused_with_its_name():
    with pytest.raises(ValueError, match=r"(?s)plate 'data'.*subsample_size"):
        pi.sample(subsampled_model, jnp.arange(6.0), **QUICK)


def test_clashing_leaf_names_are_refused():
    with pytest.raises(ValueError, match="clashing names"):
        pi.LogDensity(lambda p: 0.0 * p["a.b"], {"a": {"b": jnp.zeros(())}, "a.b": jnp.zeros(())})


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 50 draws: ESS too
def test_divergences_after_warmup_are_reported_with_the_fix():
    def wall(x):
        # A density that drops by 1e6 outside |x| < 1: any trajectory crossing it diverges.
        return -0.5 * jnp.sum(x**2) - 1e6 * jnp.sum(jnp.maximum(jnp.abs(x) - 1.0, 0.0) ** 2)

    target = pi.LogDensity(wall, jnp.zeros(2))
    with pytest.warns(SamplingWarning, match=r"(?s)diverged.*target_acceptance"):
        idata = pi.sample(target, warmup=0, draws=50, step_size=3.0, progress=False)
    assert int(idata.sample_stats["diverging"].values.sum()) > 0


def test_misspelled_kernel_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"max_num_doubling'\].*'max_num_doublings'"):
        mcmc.nuts(std_normal, 0.1, max_num_doubling=3)
    with pytest.raises(ValueError, match="num_integration_steps"):
        mcmc.window_adaptation(mcmc.hmc, std_normal, num_integration_step=3)


def test_default_params_are_the_algorithms_own():
    params = mcmc.hmc.default_params(jnp.zeros(3), num_integration_steps=8)
    assert isinstance(params, mcmc.HMCParams) and params.num_integration_steps == 8
    assert params.inverse_mass_matrix.shape == (3,)
    assert mcmc.nuts.default_params({"a": jnp.zeros(2)}).step_size == 1.0
    assert mcmc.elliptical_slice.default_params(jnp.zeros(2)).cov_cholesky is None


# ---------------------------------------------------------------------------------------
# Data at the boundary


def regression(x, y):
    slope = numpyro.sample("slope", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(slope * x, 1.0), obs=y)


def test_nan_covariate_is_named_with_the_fix():
    x, y = jnp.array([1.0, jnp.nan, 2.0]), jnp.array([0.5, 0.2, 1.1])
    with pytest.raises(ValueError, match=r"(?s)argument 'x' has 1 NaN value\(s\).*impute"):
        pi.from_numpyro(regression, x, y)
    with pytest.raises(ValueError, match=r"argument 'x' has 1 infinite value\(s\)"):
        pi.from_numpyro(regression, x=x.at[1].set(jnp.inf), y=y)


def test_data_as_python_lists_is_converted():
    from_lists = pi.from_numpyro(regression, [1.0, 3.0, 2.0], y=[0.5, 0.2, 1.1])
    from_arrays = pi.from_numpyro(
        regression, jnp.array([1.0, 3.0, 2.0]), y=jnp.array([0.5, 0.2, 1.1])
    )
    position = {"slope": jnp.array(0.3)}
    assert float(from_lists.logdensity_fn(position)) == float(from_arrays.logdensity_fn(position))


def branching_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    if mu > 0:  # Python control flow on a sampled value: cannot be traced
        mu = 2 * mu
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def indexing_model(y):
    mu = numpyro.sample("mu", dist.Normal(jnp.zeros(3), 1.0))
    numpyro.sample("y", dist.Normal(mu[mu > 0].sum(), 1.0), obs=y)


@pytest.mark.parametrize(
    ("model", "method"),
    [(branching_model, "nuts"), (branching_model, "smc"), (branching_model, "ns"),
     (indexing_model, "nuts")],
    ids=["if-nuts", "if-smc", "if-ns", "mask-index"],
)  # fmt: skip
def test_untraceable_models_name_the_fix_and_keep_jaxs_line(model, method):
    with pytest.raises(TypeError, match="the model turns a traced value .a sampled value") as error:
        pi.sample(model, jnp.array([0.3, -0.2]), method=method, **QUICK)
    assert "jnp.where" in str(error.value) and "JAX's message" in str(error.value)
    assert "test_errors.py" in str(error.value)  # JAX names the model's line
    assert isinstance(error.value.__cause__, jax.errors.JAXTypeError | IndexError)


@pytest.mark.parametrize(
    ("functions", "name"),
    [
        ({"logdensity_fn": lambda x: -0.5 * float(x @ x)}, "logdensity_fn"),
        (
            {"logprior_fn": lambda x: -0.5 * jnp.sum(x**2),
             "loglikelihood_fn": lambda x: -int(x[0]) * 1.0},
            "loglikelihood_fn",
        ),
    ],
    ids=["float", "int-likelihood"],
)  # fmt: skip
def test_untraceable_log_densities_are_refused_when_built(functions, name):
    with pytest.raises(TypeError, match=f"`{name}` of the `LogDensity` turns a traced value"):
        pi.LogDensity(init=jnp.zeros(2), **functions)
