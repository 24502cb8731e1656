"""Produce the long-run references in ``probinfer/zoo/references/`` (run by hand, not in tests).

Usage (needs the `bench` extra for BlackJAX; about 2 minutes on two CPU cores)::

    python -m probinfer.zoo.make_references [MODEL ...]

For logistic regression and the Poisson GP, the posterior is sampled by two independent
implementations:
NumPyro NUTS and BlackJAX NUTS with window adaptation, 8 chains x 5000 draws after 1000
warmup each, in float64. The stored moments and their MCSE (arviz, ESS-based) come from the
NumPyro run; the script refuses to write them unless the BlackJAX moments agree within
``MAX_Z`` combined MCSE for every coordinate of every mean and sd and both runs have
R-hat below ``MAX_RHAT``.
"""

import sys
import time
from types import ModuleType

import arviz as az
import blackjax
import jax
import numpy as np
import numpyro

from probinfer.zoo import gp_poisson, logistic_regression
from probinfer.zoo._reference import Reference, save_reference
from probinfer.zoo._runs import LogDensity, max_abs_z, posterior_moments, run_numpyro_nuts

NUM_CHAINS = 8
NUM_WARMUP = 1000
NUM_SAMPLES = 5000
MAX_Z = 4.0
MAX_RHAT = 1.01


def run_blackjax_nuts(
    log_density: LogDensity, *, seed: int, num_chains: int, num_warmup: int, num_samples: int
) -> dict[str, np.ndarray]:
    """Run BlackJAX NUTS with window adaptation, chains one after another.

    Each chain starts from uniform(-2, 2) in unconstrained space and adapts its own step size
    and diagonal mass matrix.

    Args:
        log_density: the model as a flat unconstrained log density.
        seed: seed of the run's key.
        num_chains: number of independent chains.
        num_warmup: adaptation steps per chain.
        num_samples: kept draws per chain.

    Returns:
        Constrained draws per site, shape (chain, draw, ...).
    """

    @jax.jit
    def one_chain(key: jax.Array) -> dict[str, jax.Array]:
        init_key, warmup_key, sample_key = jax.random.split(key, 3)
        position = jax.random.uniform(init_key, (log_density.num_dims,), minval=-2.0, maxval=2.0)
        warmup = blackjax.window_adaptation(blackjax.nuts, log_density.logdensity_fn)
        (state, parameters), _ = warmup.run(warmup_key, position, num_steps=num_warmup)
        step = blackjax.nuts(log_density.logdensity_fn, **parameters).step

        def body(
            state: blackjax.mcmc.hmc.HMCState, key: jax.Array
        ) -> tuple[blackjax.mcmc.hmc.HMCState, dict[str, jax.Array]]:
            state, _ = step(key, state)
            return state, log_density.from_flat(state.position)

        _, draws = jax.lax.scan(body, state, jax.random.split(sample_key, num_samples))
        return draws

    chains = [one_chain(key) for key in jax.random.split(jax.random.key(seed), num_chains)]
    return {name: np.stack([np.asarray(chain[name]) for chain in chains]) for name in chains[0]}


def max_rhat(draws: dict[str, np.ndarray]) -> float:
    """Largest rank-normalized split R-hat over all coordinates.

    Args:
        draws: draws per site, shape (chain, draw, ...).

    Returns:
        The maximum R-hat.
    """
    rhat = az.rhat(az.convert_to_dataset(draws))
    return float(max(np.max(np.asarray(rhat[name])) for name in draws))


def make_long_run_reference(zoo_model: ModuleType) -> None:
    """Sample a zoo model twice (NumPyro, BlackJAX), compare, and write its reference JSON.

    Args:
        zoo_model: a zoo module with ``model``, ``data()`` and ``REFERENCE_PATH``.
    """
    args, kwargs = zoo_model.data()
    start = time.perf_counter()
    numpyro_draws = run_numpyro_nuts(
        zoo_model.model,
        args,
        kwargs,
        seed=1,
        num_chains=NUM_CHAINS,
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
    )
    print(f"NumPyro NUTS: {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    blackjax_draws = run_blackjax_nuts(
        LogDensity(zoo_model.model, args, kwargs),
        seed=2,
        num_chains=NUM_CHAINS,
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
    )
    print(f"BlackJAX NUTS: {time.perf_counter() - start:.0f} s")

    numpyro_moments = posterior_moments(numpyro_draws)
    blackjax_moments = posterior_moments(blackjax_draws)
    z = {name: max_abs_z(blackjax_moments[name], numpyro_moments[name]) for name in numpyro_moments}
    rhat = {"NumPyro": max_rhat(numpyro_draws), "BlackJAX": max_rhat(blackjax_draws)}
    print("max |z| NumPyro vs BlackJAX per site:", {k: round(v, 2) for k, v in z.items()})
    print("max R-hat:", {k: round(v, 4) for k, v in rhat.items()})
    if max(z.values()) > MAX_Z or max(rhat.values()) > MAX_RHAT:
        raise SystemExit("the two runs disagree or did not converge; reference not written")

    reference = Reference(
        moments=numpyro_moments,
        log_z=None,
        source=(
            f"long runs: NumPyro NUTS + BlackJAX NUTS, {NUM_CHAINS} x {NUM_SAMPLES} draws "
            f"each after {NUM_WARMUP} warmup, float64; moments from NumPyro, BlackJAX agrees "
            f"within {max(z.values()):.2f} MCSE"
        ),
    )
    save_reference(reference, zoo_model.REFERENCE_PATH)
    print(f"wrote {zoo_model.REFERENCE_PATH}")


LONG_RUN_MODELS = {"logistic_regression": logistic_regression, "gp_poisson": gp_poisson}


def main(names: list[str]) -> None:
    """Regenerate the long-run references of ``names`` (all when empty)."""
    unknown = sorted(set(names) - set(LONG_RUN_MODELS))
    if unknown:
        raise SystemExit(
            f"no long-run reference for {unknown}; choose from {list(LONG_RUN_MODELS)}"
        )
    numpyro.enable_x64()
    for name in names or LONG_RUN_MODELS:
        print(name)
        make_long_run_reference(LONG_RUN_MODELS[name])


if __name__ == "__main__":
    main(sys.argv[1:])
