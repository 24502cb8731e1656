"""Convergence diagnostics (ESS, R-hat, MCSE) computed by ArviZ."""

from typing import Any, cast

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
    # A data frame for the default `fmt="wide"` (and "long"); `fmt="xarray"` in kwargs is the
    # caller's explicit choice of a Dataset.
    return cast(pd.DataFrame, az.summary(idata, **kwargs))
