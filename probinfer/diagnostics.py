"""Convergence diagnostics (ESS, R-hat, MCSE) computed by ArviZ."""

from typing import Any

import arviz as az
import pandas as pd


def summary(idata: az.InferenceData, **kwargs: Any) -> pd.DataFrame:
    """ArviZ's posterior summary: mean, sd, HDI, MCSE, bulk/tail ESS and R-hat per site.

    Args:
        idata: output of :func:`probinfer.sample`.
        **kwargs: passed to :func:`arviz.summary` (e.g. ``var_names``, ``hdi_prob``).

    Returns:
        A data frame with one row per scalar component.
    """
    return az.summary(idata, **kwargs)
