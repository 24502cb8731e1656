"""What both PFN predictives (regression and classification) share: draws as ArviZ output."""

from __future__ import annotations

import abc

import arviz as az
import equinox as eqx
import numpy as np
from jaxtyping import PRNGKeyArray


class AbstractDrawingPredictive(eqx.Module):
    """A predictive over ``m`` test points that draws independent samples per point."""

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, num_samples: int) -> np.ndarray:
        """``(num_samples, m)`` independent draws per test point."""

    def to_idata(
        self, key: PRNGKeyArray, num_draws: int = 4000, *, name: str = "y"
    ) -> az.InferenceData:
        """Independent predictive draws as ArviZ ``InferenceData``.

        Args:
            key: PRNG key.
            num_draws: draws per test point.
            name: the variable's name.

        Returns:
            ``InferenceData`` with a ``posterior_predictive`` group holding ``name`` of shape
            ``(1, num_draws, m)`` (one chain; dimension ``test_point``): values for a
            regression predictive, integer labels for a classifier's.
        """
        draws = np.asarray(self.sample(key, num_draws))[None]
        return az.from_dict(posterior_predictive={name: draws}, dims={name: ["test_point"]})
