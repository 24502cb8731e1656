"""Long-run helpers for the reference scripts: NumPyro NUTS runs, moments with MCSE, z-scores.

Used by ``make_references.py`` and ``check_references.py`` only; importing the zoo never
imports this module.
"""

from collections.abc import Callable

import arviz as az
import jax
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import initialize_model

from probinfer.zoo._reference import SiteMoments

__all__ = ["LogDensity", "max_abs_z", "posterior_moments", "run_numpyro_nuts"]


def run_numpyro_nuts(
    model: Callable[..., None],
    args: tuple,
    kwargs: dict,
    *,
    seed: int,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
) -> dict[str, np.ndarray]:
    """Run NumPyro NUTS (diagonal mass matrix, window adaptation) on several chains.

    Args:
        model: a NumPyro model.
        args: positional arguments of the model.
        kwargs: keyword arguments of the model.
        seed: seed of the run's key.
        num_chains: number of independent chains, run one after another.
        num_warmup: warmup iterations per chain.
        num_samples: kept draws per chain.

    Returns:
        Constrained draws of every latent and deterministic site, shape (chain, draw, ...).
    """
    mcmc = MCMC(
        NUTS(model),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(seed), *args, **kwargs)
    return {
        name: np.asarray(draws) for name, draws in mcmc.get_samples(group_by_chain=True).items()
    }


def posterior_moments(draws: dict[str, np.ndarray]) -> dict[str, SiteMoments]:
    """Posterior mean and sd per site with their MCSE (arviz, ESS-based).

    Args:
        draws: draws per site, shape (chain, draw, ...).

    Returns:
        Moments per site with ``mcse_mean`` and ``mcse_sd`` filled in.
    """
    dataset = az.convert_to_dataset(draws)
    mcse_mean = az.mcse(dataset, method="mean")
    moments = {}
    for name, value in draws.items():
        mean = value.mean(axis=(0, 1))
        sd = value.std(axis=(0, 1), ddof=1)
        # The sd's MCSE by the delta method on the variance, sd(d) / sqrt(ESS(d)) / (2 sd)
        # with d the squared deviations (ArviZ 0.23's `mcse(method="sd")` fails with
        # NumPy 2 on plain arrays).
        squared = (value - mean) ** 2
        ess_squared = np.asarray(az.ess(az.convert_to_dataset({"d": squared}), method="mean")["d"])
        mcse_variance = squared.std(axis=(0, 1), ddof=1) / np.sqrt(ess_squared)
        moments[name] = SiteMoments(
            mean=mean,
            sd=sd,
            mcse_mean=np.asarray(mcse_mean[name]),
            mcse_sd=mcse_variance / (2.0 * sd),
        )
    return moments


def max_abs_z(estimate: SiteMoments, reference: SiteMoments, *, include_sd: bool = True) -> float:
    """Largest |estimate - reference| / combined MCSE over a site's means and sds.

    Args:
        estimate: moments from a run, with MCSE.
        reference: reference moments; their MCSE, if any, is combined in quadrature.
        include_sd: whether to score the sd as well as the mean.

    Returns:
        The maximum absolute z-score over all elements (NaN if any estimate is NaN).
    """
    pairs = [(estimate.mean, reference.mean, estimate.mcse_mean, reference.mcse_mean)]
    if include_sd:
        pairs.append((estimate.sd, reference.sd, estimate.mcse_sd, reference.mcse_sd))
    z_scores = []
    for value, ref_value, mcse, ref_mcse in pairs:
        variance = np.asarray(mcse) ** 2 + (0.0 if ref_mcse is None else np.asarray(ref_mcse) ** 2)
        z_scores.append(np.abs(value - ref_value) / np.sqrt(variance))
    return float(np.max(np.concatenate([np.ravel(z) for z in z_scores])))


class LogDensity:
    """A NumPyro model as a log density over a flat unconstrained vector.

    ``logdensity_fn(u)`` is the model's log joint in unconstrained space (with the Jacobian),
    so that it integrates to p(data). ``to_flat`` maps constrained draws of the latent sample
    sites to unconstrained flat vectors, ``from_flat`` maps back (deterministic sites included).
    """

    def __init__(self, model: Callable[..., None], args: tuple, kwargs: dict) -> None:
        """Trace the model once to find its latent sites and their transforms.

        Args:
            model: a NumPyro model.
            args: positional arguments of the model.
            kwargs: keyword arguments of the model.
        """
        info = initialize_model(jax.random.key(0), model, model_args=args, model_kwargs=kwargs)
        example = info.param_info.z
        _, self._unravel = ravel_pytree(example)
        self.num_dims = sum(int(np.size(value)) for value in example.values())
        self._potential_fn = info.potential_fn
        self._postprocess_fn = info.postprocess_fn
        self._transforms = {
            name: site["fn"].support
            for name, site in info.model_trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        }

    def logdensity_fn(self, flat: jax.Array) -> jax.Array:
        """Log joint density at one flat unconstrained point.

        Args:
            flat: unconstrained position, shape (num_dims,).

        Returns:
            The log density, a scalar.
        """
        return -self._potential_fn(self._unravel(flat))

    def to_flat(self, draws: dict[str, np.ndarray]) -> np.ndarray:
        """Unconstrained flat vectors from constrained draws with one leading sample axis.

        Args:
            draws: constrained draws of (at least) every latent sample site, shape (n, ...).

        Returns:
            Flat unconstrained draws, shape (n, num_dims).
        """
        unconstrained = {
            name: biject_to(support).inv(draws[name]) for name, support in self._transforms.items()
        }
        flatten = jax.vmap(lambda tree: ravel_pytree(tree)[0])
        return np.asarray(flatten(unconstrained))

    def from_flat(self, flat: jax.Array) -> dict[str, jax.Array]:
        """Constrained sites (latent and deterministic) at one flat unconstrained point.

        Args:
            flat: unconstrained position, shape (num_dims,).

        Returns:
            Constrained values per site.
        """
        return self._postprocess_fn(self._unravel(flat))
