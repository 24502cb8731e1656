"""Triangular solves that XLA:CPU cannot deadlock on.

On XLA:CPU (jaxlib 0.10) a batched ``solve_triangular`` is a LAPACK custom call that
splits its batch over the intra-op thread pool and blocks until the parts are done. Two
such calls that a program runs concurrently (independent thunks: the importance weights of
a GP task evaluate a mixture's density three times and a GP likelihood per draw) can each
hold a pool thread while waiting for parts queued behind the other: on 2 cores every
thread waits and the program never finishes (seen with gdb: both threads in
``lapack_strsm_ffi``'s ``BlockingCounter::Wait``). Forward substitution in plain XLA ops
has no custom call and no nested parallelism.
"""

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float


def solve_lower_triangular(
    factor: Float[Array, "n n"], rhs: Float[Array, "n ..."]
) -> Float[Array, "n ..."]:
    """``factor^{-1} rhs`` for a lower-triangular ``factor`` by forward substitution.

    Entries above the diagonal are never read. ``rhs`` is ``(n,)`` or ``(n, r)``; batch by
    ``jax.vmap``. ``n`` steps of ``O(n r)`` work each: meant for the small systems
    (``n`` up to a few hundred) of a latent dimension or a GP dataset.
    """
    size = factor.shape[-1]
    if factor.shape != (size, size) or rhs.shape[0] != size:
        raise ValueError(
            f"`factor` must be square and match `rhs`'s first axis, got {factor.shape} and "
            f"{rhs.shape}."
        )
    lower = jnp.tril(factor, -1)

    def row(index: Array, solution: Array) -> Array:
        # `solution` is zero from `index` on, so the product sums the solved entries only.
        value = (rhs[index] - lower[index] @ solution) / factor[index, index]
        return solution.at[index].set(value)

    return lax.fori_loop(0, size, row, jnp.zeros_like(rhs, jnp.result_type(factor, rhs)))
