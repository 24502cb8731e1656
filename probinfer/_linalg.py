"""Triangular solves that XLA:CPU cannot deadlock on.

On XLA:CPU (jaxlib 0.10) a batched ``solve_triangular`` is a LAPACK custom call that
splits its batch over the intra-op thread pool and blocks until the parts are done. Two
such calls that a program runs concurrently (independent thunks: the importance weights of
a GP task evaluate a mixture's density three times and a GP likelihood per draw) can each
hold a pool thread while waiting for parts queued behind the other: on 2 cores every
thread waits and the program never finishes (seen with gdb: both threads in
``lapack_strsm_ffi``'s ``BlockingCounter::Wait``). Forward substitution in plain XLA ops
has no custom call and no nested parallelism. Used where that program solves; other
batched LAPACK solves (the linear-Gaussian mixture update, nested sampling's ellipsoids,
the NNGP posteriors) and every batched Cholesky are still LAPACK calls.
"""

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float


def solve_lower_triangular(
    factor: Float[ArrayLike, "n n"], rhs: Float[ArrayLike, "n ..."]
) -> Float[Array, "n ..."]:
    """``factor^{-1} rhs`` for a lower-triangular ``factor`` by forward substitution.

    Entries above the diagonal are never read. ``rhs`` is ``(n,)`` or ``(n, r)``; batch by
    ``jax.vmap``. ``n`` steps of ``O(n r)`` work each: meant for the small systems
    (``n`` up to a few hundred) of a latent dimension or a GP dataset. The products run
    at full precision (no TF32 on GPUs), as LAPACK's solve does.
    """
    factor, rhs = jnp.asarray(factor), jnp.asarray(rhs)
    size = factor.shape[-1] if factor.ndim else 0
    if factor.shape != (size, size) or rhs.ndim not in (1, 2) or rhs.shape[0] != size:
        raise ValueError(
            "`factor` must be square and `rhs` of shape (n,) or (n, r) with n its size, got "
            f"{factor.shape} and {rhs.shape}."
        )
    lower = jnp.tril(factor, -1)

    def row(index: Array, solution: Array) -> Array:
        # `solution` is zero from `index` on, so the product sums the solved entries only.
        product = jnp.matmul(lower[index], solution, precision=lax.Precision.HIGHEST)
        return solution.at[index].set((rhs[index] - product) / factor[index, index])

    return lax.fori_loop(0, size, row, jnp.zeros_like(rhs, jnp.result_type(factor, rhs)))
