"""The model zoo: NumPyro models with data and reference posteriors.

Each model is a module with ``model`` (a NumPyro model), ``data()`` (returning the args and
kwargs to call it with) and ``reference`` (a :class:`Reference`: posterior moments per
constrained-space site, and ``log_z`` where known).

Example:
    >>> from probinfer import zoo
    >>> zoo_model = zoo.get("normal_normal")
    >>> args, kwargs = zoo_model.data()
    >>> sorted(zoo_model.reference.moments)
    ['mu']
"""

from types import ModuleType

from probinfer.zoo import (
    beta_binomial,
    eight_schools_noncentered,
    gaussian_correlated_100d,
    gaussian_iid,
    gaussian_mixture_2d,
    gp_poisson,
    lgssm,
    linear_regression,
    logistic_regression,
    neals_funnel,
    normal_normal,
)
from probinfer.zoo._reference import Reference, SiteMoments, load_reference, save_reference

__all__ = [
    "ZOO",
    "Reference",
    "SiteMoments",
    "get",
    "load_reference",
    "names",
    "save_reference",
]

ZOO: dict[str, ModuleType] = {
    "gaussian_iid": gaussian_iid,
    "gaussian_correlated_100d": gaussian_correlated_100d,
    "normal_normal": normal_normal,
    "beta_binomial": beta_binomial,
    "linear_regression": linear_regression,
    "neals_funnel": neals_funnel,
    "eight_schools_noncentered": eight_schools_noncentered,
    "lgssm": lgssm,
    "gaussian_mixture_2d": gaussian_mixture_2d,
    "logistic_regression": logistic_regression,
    "gp_poisson": gp_poisson,
}


def names() -> list[str]:
    """The names of all zoo models, in registry order.

    Returns:
        The model names.
    """
    return list(ZOO)


def get(name: str) -> ModuleType:
    """Look up a zoo model by name.

    Args:
        name: the model's module name, for example ``"eight_schools_noncentered"``.

    Returns:
        The model's module, with ``model``, ``data`` and ``reference``.

    Raises:
        ValueError: if ``name`` is not a zoo model.
    """
    if name not in ZOO:
        raise ValueError(
            f"`name` must be one of the zoo models {names()}, got {name!r}; "
            "see `zoo.names()` for the list."
        )
    return ZOO[name]
