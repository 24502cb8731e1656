"""Checks that need a fresh Python process, run together in one to pay its start-up once.

- What ``import probinfer`` imports (this process has imported everything already).
- XLA:CPU deadlocks (jax 0.10) on a one-device CPU, as users run: the suite's four fake
  devices (its ``XLA_FLAGS``) change XLA:CPU's scheduling and hide them; and that the
  installed jaxlib runs two batched LAPACK calls at once (0.10.0-0.11.0 cannot, on few
  cores, and are excluded by ``pyproject.toml``). A hang ends the process after the timeout,
  with a traceback of where it hung: the hung check and every later one fail.

Each check runs in its own namespace and prints ``name: result``; the float64 one runs last,
since it turns on ``jax_enable_x64`` for the rest of the process.
"""

import os
import subprocess
import sys

import pytest

LAZY_AMORTIZE = """
import sys, probinfer as pi
assert 'probinfer.amortize' not in sys.modules, 'import probinfer imported probinfer.amortize'
assert pi.amortize.PFN.__name__ == 'PFN'
try:
    pi.no_such_module
except AttributeError as error:
    result = str(error)
"""

ONE_DEVICE_MALA = """
import numpy as np
import jax, jax.numpy as jnp
from probinfer import mcmc
from probinfer.model import Target
from probinfer.mcmc._metric import population_covariance

rng = np.random.default_rng(20)
x = jnp.asarray(rng.normal(size=(30, 20)), jnp.float32)
y = jnp.asarray(rng.normal(size=30), jnp.float32)
normal = lambda v, m, s: jnp.sum(-0.5 * ((v - m) / s) ** 2 - jnp.log(s))
target = Target.from_parts(lambda w: normal(w, 0.0, 1.0), lambda w: normal(y, x @ w, 0.5))
density = target.tempered_fn(0.5)
kernel = mcmc.mala.build_kernel()
def replica(key, particles):
    covariance = population_covariance(particles, jnp.full(200, -jnp.log(200.0)), True)
    params = mcmc.mala.make_params(jnp.asarray(0.3), covariance)
    def chain(key, position):
        state = mcmc.mala.init(position, density)
        step = lambda s, k: kernel(k, s, density, params)
        return jax.lax.scan(step, state, jax.random.split(key, 10))[0].position
    return jax.vmap(chain)(jax.random.split(key, 200), particles).sum()
keys = jax.random.split(jax.random.key(1), 32)
out = jax.jit(jax.vmap(replica))(keys, jax.random.normal(jax.random.key(0), (32, 200, 20)))
result = bool(jnp.all(jnp.isfinite(out)))
"""

# Two independent batched Cholesky factorisations and solves in one program, as vectorized
# chains of a model with two Gaussian-process terms make: jaxlib 0.10.2 hung here every time
# (3 of 3 fresh processes; 200 x 200 float32 matrices, a batch of 4).
CONCURRENT_BATCHED_LAPACK = """
import jax, jax.numpy as jnp
def two_terms(a, b):
    total = 0.0
    for m in (a, b):
        factor = jnp.linalg.cholesky(m @ m.T + 200.0 * jnp.eye(200))
        solved = jax.scipy.linalg.solve_triangular(factor, jnp.ones(200), lower=True)
        total = total + solved @ solved + jnp.log(jnp.diag(factor)).sum()
    return total
step = jax.jit(jax.vmap(jax.value_and_grad(two_terms, argnums=(0, 1))))
a, b = jax.random.normal(jax.random.key(0), (2, 4, 200, 200))
for i in range(5):
    value, _ = jax.block_until_ready(step(a + i, b))
result = bool(jnp.all(jnp.isfinite(value)))
"""

TWO_GAUSSIAN_PROCESS_TERMS = """
import jax, jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist
import probinfer as pi
jax.config.update("jax_enable_x64", True)
x = np.linspace(-1.0, 1.0, 40)
def model(y1, y2):
    lengthscale = numpyro.sample("lengthscale", dist.LogNormal(0.0, 0.3))
    k = jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / lengthscale**2) + 0.1 * jnp.eye(40)
    numpyro.sample("y1", dist.MultivariateNormal(jnp.zeros(40), covariance_matrix=k), obs=y1)
    numpyro.sample("y2", dist.MultivariateNormal(jnp.zeros(40), 2.0 * k), obs=y2)
y1, y2 = np.random.default_rng(0).normal(size=(2, 40))
# The hang was in the log_likelihood group built after sampling: random-walk Metropolis
# compiles far faster than NUTS, and sequential chains keep the sampler's own LAPACK calls
# unbatched, so that a hang can only be the one this checks.
idata = pi.sample(
    model, y1, y2, method="rwm", chain_method="sequential", chains=4, warmup=20, draws=500,
    seed=0, progress=False,
)
result = idata.log_likelihood["y1"].shape
"""

# Two groups of vectorized HMC chains (pi.sample's CPU default for HMC), run at once from two
# host threads, each a batched Cholesky and solves per leapfrog step: under jaxlib 0.10.2 two
# vectorized NUTS groups hung (gdb: both pool workers in the executable's wait).
GROUPED_VECTORIZED_GP = """
import os
os.environ["PROBINFER_CPU_THREADS"] = "2"
import jax, jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist
import probinfer as pi
from probinfer.driver import _drive
x = np.linspace(-1.0, 1.0, 60)
def model(y):
    lengthscale = numpyro.sample("lengthscale", dist.LogNormal(0.0, 0.3))
    k = jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / lengthscale**2) + 0.1 * jnp.eye(60)
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(60), covariance_matrix=k), obs=y)
groups = []
run_in_groups = _drive.run_in_groups
def counted(*args):
    groups.append(args[2])
    return run_in_groups(*args)
_drive.run_in_groups = counted
y = np.random.default_rng(1).normal(size=60)
idata = pi.sample(model, y, method="hmc", chains=4, warmup=100, draws=100, seed=0, progress=False)
del os.environ["PROBINFER_CPU_THREADS"]
result = (idata.posterior["lengthscale"].shape, sorted(set(groups)))
"""

CHECKS = {
    "lazy_amortize": LAZY_AMORTIZE,
    "one_device_mala": ONE_DEVICE_MALA,
    "concurrent_batched_lapack": CONCURRENT_BATCHED_LAPACK,
    "grouped_vectorized_gp": GROUPED_VECTORIZED_GP,
    "two_gaussian_terms": TWO_GAUSSIAN_PROCESS_TERMS,
}
TIMEOUT_S = 200


def _script() -> str:
    # faulthandler prints every thread's Python stack before the timeout kills the process;
    # a check that raises prints its error and the next one runs.
    lines = [
        "import faulthandler, traceback",
        f"faulthandler.dump_traceback_later({TIMEOUT_S - 20}, exit=True)",
    ]
    for name, code in CHECKS.items():
        lines += [
            "try:",
            f"    namespace = {{}}\n    exec({code!r}, namespace)",
            f"    print({name!r} + ': ' + str(namespace['result']), flush=True)",
            "except Exception:",
            f"    print({name!r} + ': raised ' + traceback.format_exc().replace(chr(10), ' | '))",
        ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fresh_run() -> subprocess.CompletedProcess[str]:
    """All checks in one fresh one-device CPU process (on a GPU machine too: the deadlocks
    are XLA:CPU's), without the suite's ``XLA_FLAGS``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run(
        [sys.executable, "-c", _script()], capture_output=True, text=True, timeout=TIMEOUT_S,
        env=env,
    )  # fmt: skip


def _result(run: subprocess.CompletedProcess[str], name: str) -> str:
    for line in run.stdout.splitlines():
        if line.startswith(f"{name}: "):
            return line.removeprefix(f"{name}: ")
    raise AssertionError(
        f"check {name!r} was not reached or did not finish (a hang or a crash here or in an "
        f"earlier check; rc "
        f"{run.returncode}):\n{run.stderr[-3000:]}"
    )


def test_amortize_is_reachable_as_an_attribute_and_imported_lazily(fresh_run):
    """`pi.amortize` works without importing it first, and `import probinfer` alone does
    not import it."""
    assert "no attribute 'no_such_module'" in _result(fresh_run, "lazy_amortize")


def test_vmapped_dense_mala_does_not_deadlock_on_one_cpu_device(fresh_run):
    """XLA:CPU (jax 0.10) deadlocked when MALA's two triangular solves (forward and backward
    proposal densities) ran concurrently in a vmapped scan (32 x 200 chains, dense metric):
    `pi.evidence` with MALA moves hung forever on a one-device CPU. MALA now does one solve
    (about 5 s when it works)."""
    assert _result(fresh_run, "one_device_mala") == "True"


def test_the_installed_jaxlib_runs_concurrent_batched_lapack_calls(fresh_run):
    """jaxlib 0.10.0 to 0.11.0 split a batched LAPACK call over XLA:CPU's thread pool and
    block a pool thread until the parts are done: two such calls at once on 2 cores wait for
    each other forever (gdb: both workers in ``ParallelBatchMap``'s ``BlockingCounter``).
    ``pyproject.toml`` excludes those versions. This check hangs with jaxlib 0.10.2 where
    the pool has 2 threads (2 cores), and may not where it has more; the version check
    beside it holds everywhere."""
    assert _result(fresh_run, "concurrent_batched_lapack") == "True"


def test_the_installed_jaxlib_is_outside_the_excluded_versions():
    """A ``--no-deps`` or conda install can bypass ``pyproject.toml``'s exclusion: jaxlib
    0.10.0 to 0.11.0 hold the blocking batch code (``ParallelBatchMap`` in their
    ``jaxlib/cpu/_lapack.so``; not in 0.9.2 or 0.11.1-0.12.1). The range is the one
    ``jaxlib_blocks_batched_lapack`` holds for, pinned on version strings in
    ``tests/test_driver.py``."""
    import jaxlib

    from probinfer.driver._threads import jaxlib_blocks_batched_lapack

    assert not jaxlib_blocks_batched_lapack(), jaxlib.__version__


def test_grouped_vectorized_chains_with_batched_lapack_calls_do_not_deadlock(fresh_run):
    """HMC's vectorized chains on a multi-core CPU run as two groups from two host threads,
    each group's program a batched Cholesky and triangular solves per leapfrog step: the
    two programs' LAPACK calls run at once, and finish, on the installed jaxlib (groups of
    vectorized chains are made only outside 0.10.0-0.11.0, so this cannot reproduce the
    hang seen there; it checks the grouping that replaced one program is safe)."""
    assert _result(fresh_run, "grouped_vectorized_gp") == "((4, 100), [2])"


def test_two_batched_gaussian_likelihoods_do_not_deadlock(fresh_run):
    """The log_likelihood group of a model with two multivariate normal terms (GP
    likelihoods, x64) never came back: the pointwise program ran both terms batched over
    draws, and XLA:CPU's two batched LAPACK calls each waited on the thread pool for parts
    queued behind the other (gdb; 2 of 2 fresh processes hung, 0 of 2 with the fix). It runs
    one draw after another now."""
    assert _result(fresh_run, "two_gaussian_terms") == "(4, 500)"
    assert fresh_run.returncode == 0, fresh_run.stderr[-2000:]
