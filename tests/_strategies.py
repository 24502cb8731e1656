"""Hypothesis strategies shared by the property-based tests of bad input."""

import numpy as np
from hypothesis import strategies as st


def not_a_count(minimum: int) -> st.SearchStrategy:
    """Any value that is not an integer >= ``minimum`` (nor None, which some settings take
    for their default)."""
    return st.one_of(
        st.integers(max_value=minimum - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.text(max_size=3),
        st.integers(min_value=minimum, max_value=2**20).map(float),  # 4.0 is not 4
        st.integers(min_value=minimum, max_value=100).map(lambda n: np.array([n])),
        st.floats(min_value=minimum, max_value=100).map(np.float32),
    )


def not_a_positive_number() -> st.SearchStrategy:
    """Any value that is not a finite number > 0: zero, negatives, NaN, infinities, None,
    strings, complex numbers."""
    return st.one_of(
        st.floats(max_value=0.0),
        st.sampled_from([np.nan, np.inf, -np.inf, None, "a", "1.0", 1j, 1.0 + 0.5j]),
        st.floats(max_value=0.0).map(lambda value: np.array([1.0, value])),
    )


@st.composite
def awkward_arrays(draw: st.DrawFn, shape: tuple[int, ...], corrupt: bool = True) -> np.ndarray:
    """An array of ``shape`` in float32, float64, int or bool, with values from -1e3 to 1e3
    and, when ``corrupt``, sometimes a NaN, an infinity or a huge entry (1e20 to 1e300)
    placed anywhere."""
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]))
    size = int(np.prod(shape))
    values = np.asarray(draw(st.lists(st.floats(-1e3, 1e3), min_size=size, max_size=size)))
    array = values.astype(dtype).reshape(shape)
    if corrupt and size and np.issubdtype(dtype, np.floating):
        flat = array.reshape(-1)
        for index in draw(st.lists(st.integers(0, size - 1), max_size=2)):
            with np.errstate(over="ignore"):  # 1e300 is infinite in float32
                flat[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e20, -1e38, 1e300]))
    return array
