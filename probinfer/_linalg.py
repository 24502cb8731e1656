"""Triangular solves and Cholesky factors that XLA:CPU cannot deadlock on.

probinfer's requirements exclude the jaxlib versions this works around (0.10.0 to 0.11.0;
``pyproject.toml``); it stays for environments that install them anyway. On XLA:CPU with
those versions a batched ``solve_triangular`` is a LAPACK custom call that splits its batch
over the intra-op thread pool and blocks until the parts are done. Two such calls that a
program runs concurrently (independent thunks: the importance weights of a GP task evaluate
a mixture's density three times and a GP likelihood per draw) can each hold a pool thread
while waiting for parts queued behind the other: on 2 cores every thread waits and the
program never finishes (seen with gdb: both threads in ``lapack_strsm_ffi``'s
``BlockingCounter::Wait``). Forward substitution in plain XLA ops has no custom call and no
nested parallelism; nor has the Cholesky factorisation here (LAPACK's takes the same thread
pool). Used where that program factorises and solves. ``pi.sample``'s pointwise log
likelihoods avoid the batched calls instead, by running one draw after another
(``probinfer/_idata.py``: a model with two Gaussian-process likelihood terms hung there),
and so does its check of the chains' starting points, one chain after another
(``probinfer/run.py``: by every sign a 100-point GP reference with two kernels hung there).
jaxlib runs a small batched call inline (a batch of one always), so only large enough
batches are exposed. Other batched LAPACK calls remain: the linear-Gaussian mixture update
and the variational classifier each have two independent ones in one program (found in XLA's
optimized HLO; neither hung in stress runs); nested sampling's ellipsoids, the NNGP
posteriors and the GP prior draws have batched ones; and wherever a model is vmapped
(vectorized chains, the default for HMC, MALA and RWM; ``pi.predictive`` and
``pi.sample_prior`` over draws; SMC's particles; nested sampling's live points), a model
with two such terms makes two.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float


def _square_size(matrix: Array, name: str) -> int:
    """``n`` for an ``(n, n)`` matrix; a clear error otherwise."""
    size = matrix.shape[-1] if matrix.ndim else 0
    if matrix.shape != (size, size):
        raise ValueError(f"`{name}` must be square, got shape {matrix.shape}.")
    return size


# Compiled once per shape: called outside `jit`, the loop would compile on every call.
@jax.jit
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
    size = _square_size(factor, "factor")
    if rhs.ndim not in (1, 2) or rhs.shape[0] != size:
        raise ValueError(
            f"`rhs` must be of shape (n,) or (n, r) with n = {size}, `factor`'s size; got "
            f"{rhs.shape}."
        )
    lower = jnp.tril(factor, -1)

    def row(index: Array, solution: Array) -> Array:
        # `solution` is zero from `index` on, so the product sums the solved entries only.
        product = jnp.matmul(lower[index], solution, precision=lax.Precision.HIGHEST)
        return solution.at[index].set((rhs[index] - product) / factor[index, index])

    return lax.fori_loop(0, size, row, jnp.zeros_like(rhs, jnp.result_type(factor, rhs)))


# Compiled once per shape: called outside `jit`, the loop would compile on every call.
@jax.jit
def cholesky_lower(matrix: Float[ArrayLike, "n n"]) -> Float[Array, "n n"]:
    """The lower Cholesky factor ``L`` of a symmetric positive definite ``matrix``
    (``L L^T = matrix``), column by column in plain XLA ops (no LAPACK call; see the
    module docstring).

    Only the lower triangle is read; the upper triangle of ``L`` is zero. Where the
    matrix is not numerically positive definite the factor has NaNs (as
    ``jnp.linalg.cholesky``'s does). ``n`` steps of ``O(n^2)`` work: for small matrices
    (a GP dataset of up to a few hundred points); batch by ``jax.vmap``.
    """
    matrix = jnp.asarray(matrix)
    size = _square_size(matrix, "matrix")
    below = jnp.arange(size)

    def column(index: Array, factor: Array) -> Array:
        # Columns before `index` are done and the rest are zero, so these products sum
        # over the finished columns only.
        done = factor[index]
        diagonal = jnp.sqrt(
            matrix[index, index] - jnp.matmul(done, done, precision=lax.Precision.HIGHEST)
        )
        products = jnp.matmul(factor, done, precision=lax.Precision.HIGHEST)
        entries = (matrix[:, index] - products) / diagonal
        entries = jnp.where(below > index, entries, jnp.where(below == index, diagonal, 0.0))
        return factor.at[:, index].set(entries)

    return lax.fori_loop(0, size, column, jnp.zeros_like(matrix))
