"""Checkpoint/resume: an interrupted run resumes to exactly the uninterrupted draws."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import probinfer as pi
from probinfer.checkpoint import (
    CHECKSUM_MARK,
    DriveProgress,
    atomic_write_checked,
    load_progress,
    read_checked,
    save_progress,
)
from probinfer.driver._threads import jaxlib_blocks_batched_lapack

RUN = {"warmup": 60, "draws": 80, "chunk_size": 20, "progress": False, "chains": 2}


def model(y, scale):
    mu = numpyro.sample("mu", dist.Normal(0.0, scale))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


DATA = jnp.array([0.3, -0.2, 1.1])


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 80 draws
@pytest.mark.parametrize("num_chunks", [2, 5], ids=["in-warmup", "in-sampling"])
def test_resumed_run_gives_the_uninterrupted_draws(tmp_path, interrupt_after, num_chunks):
    full = pi.sample(model, DATA, 2.0, **RUN)
    with interrupt_after(num_chunks):
        pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **RUN)
    resumed = pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **RUN)
    np.testing.assert_array_equal(resumed.posterior["mu"].values, full.posterior["mu"].values)
    again = pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **RUN)  # finished: just loads
    np.testing.assert_array_equal(again.posterior["mu"].values, full.posterior["mu"].values)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 3 x 80 draws
@pytest.mark.parametrize("num_chunks", [2, 5], ids=["in-warmup", "in-sampling"])
def test_interleaved_chains_resume_to_the_uninterrupted_draws(
    tmp_path, interrupt_after, monkeypatch, num_chunks
):
    """Vectorized NUTS chains run as one flat loop of leapfrog steps (each chain starting
    its next transition when its own trajectory ends) stop every chunk between transitions,
    so an interrupted run resumes to exactly the uninterrupted draws."""
    import probinfer.run

    flags = []
    original_drive = probinfer.run.drive

    def spy_drive(*args, **kwargs):  # so that the test fails if nothing was interleaved
        flags.append(kwargs["interleave"])
        return original_drive(*args, **kwargs)

    monkeypatch.setattr(probinfer.run, "drive", spy_drive)
    monkeypatch.setattr(probinfer.run, "INTERLEAVE_MIN_CHAINS", 1)
    run = {**RUN, "chains": 3, "chain_method": "vectorized"}
    full = pi.sample(model, DATA, 2.0, **run)
    with interrupt_after(num_chunks):
        pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **run)
    resumed = pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **run)
    assert flags and all(flags)
    np.testing.assert_array_equal(resumed.posterior["mu"].values, full.posterior["mu"].values)
    np.testing.assert_array_equal(
        resumed.sample_stats["n_steps"].values, full.sample_stats["n_steps"].values
    )


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 4 x 80 draws
@pytest.mark.skipif(
    jax.default_backend() != "cpu" or jaxlib_blocks_batched_lapack(),
    reason="vectorized chains are grouped on CPU only, and not under jaxlib 0.10.0-0.11.0",
)
def test_vectorized_chains_resume_in_their_groups_under_another_thread_count(
    tmp_path, interrupt_after, monkeypatch
):
    """A vectorized run interrupted during warm-up on 2 threads (2 groups of 2 chains) and
    resumed on 1 keeps 2 groups in warm-up (from its checkpoint) and in sampling (from
    warm-up), as the uninterrupted run had: the draws round alike (a `vmap` of 2 chains
    may round differently from one of 4)."""
    import probinfer.run
    from probinfer.driver import THREADS_VARIABLE

    groups = []
    original_drive = probinfer.run.drive

    def spy_drive(*args, **kwargs):
        result = original_drive(*args, **kwargs)
        groups.append(result.num_groups)
        return result

    monkeypatch.setattr(probinfer.run, "drive", spy_drive)
    run = {**RUN, "chains": 4, "chain_method": "vectorized"}
    monkeypatch.setenv(THREADS_VARIABLE, "2")
    full = pi.sample(model, DATA, 2.0, **run)
    with interrupt_after(2):
        pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **run)
    monkeypatch.setenv(THREADS_VARIABLE, "1")
    groups.clear()
    resumed = pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **run)
    assert groups == [2, 2]  # warm-up, sampling
    np.testing.assert_array_equal(resumed.posterior["mu"].values, full.posterior["mu"].values)
    groups.clear()
    pi.sample(model, DATA, 2.0, **run)  # a new run on 1 thread: one program
    assert groups == [1, 1]


@pytest.mark.parametrize("num_groups", [3, None], ids=["recorded", "older-checkpoint"])
def test_progress_keeps_the_group_count(tmp_path, num_groups):
    """The group count is saved with the progress; a checkpoint without it (written before
    it was recorded) loads with none."""
    state = {"x": np.arange(4.0)}
    save_progress(tmp_path, "run=1", DriveProgress(state, 7, 1.5, num_groups))
    saved = load_progress(tmp_path, "run=1", state)
    assert saved is not None
    assert (saved.step, saved.num_groups) == (7, num_groups)
    np.testing.assert_array_equal(saved.state["x"], state["x"])


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 80 draws
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"args": (DATA, 3.0)}, "its model"),  # another Python-scalar argument
        ({"args": (DATA + 1.0, 2.0)}, "its data differ"),  # other data values
        ({"seed": 1}, "its seed, initial points"),
        ({"chains": 4}, "its sampler settings, initial points"),
        ({"target_acceptance": 0.9}, "its sampler settings differ"),
        ({"chunk_size": 10}, "its number of steps, chunk size, thinning or chain mapping differ"),
    ],
    ids=["scalar-argument", "data", "seed", "chains", "setting", "chunk-size"],
)
def test_checkpoint_of_another_run_is_refused_naming_what_differs(tmp_path, change, named):
    pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **RUN)
    settings = {**RUN, **{k: v for k, v in change.items() if k != "args"}}
    args = change.get("args", (DATA, 2.0))
    with pytest.raises(ValueError, match=f"different run: {named}"):
        pi.sample(model, *args, checkpoint=tmp_path, **settings)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 80 draws
def test_checkpoint_of_another_library_version_is_refused(tmp_path, monkeypatch):
    """The probinfer version is part of every drive's fingerprint (MCMC, SMC, nested
    sampling and training all resume through the driver): a checkpoint written by another
    version is refused, naming the version, never resumed into a different algorithm."""
    import probinfer

    pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **RUN)
    monkeypatch.setattr(probinfer, "__version__", "0.0.0+another")
    with pytest.raises(ValueError, match="different run: its probinfer version differ"):
        pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **RUN)


@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte"])
@pytest.mark.parametrize("file", ["warmup/progress.npz", "warmup/records-000000000020.npz"])
def test_damaged_checkpoint_files_are_reported_never_loaded(tmp_path, interrupt_after, damage,
                                                           file):  # fmt: skip
    with interrupt_after(3):
        pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **RUN)
    path = tmp_path / file
    content = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(content[: len(content) // 2])
    else:  # inside the first array's bytes, past the zip headers
        position = content.index(b"\x93NUMPY") + 200
        path.write_bytes(
            content[:position] + bytes([content[position] ^ 0xFF]) + content[position + 1 :]
        )
    with pytest.raises(
        ValueError, match=f"checkpoint file {re.escape(str(path))} (is truncated|does not match)"
    ):
        pi.sample(model, DATA, 2.0, checkpoint=tmp_path, **RUN)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 80 draws
def test_save_netcdf_is_atomic_and_reads_back(tmp_path, monkeypatch):
    """``pi.save_netcdf`` writes every group, the file synced to disk before it is renamed
    into place and the folder after; a write that fails part-way leaves the earlier file as
    it was and no temporary file, and a non-InferenceData is refused."""
    import os

    import arviz as az

    idata = pi.sample(model, DATA, 2.0, **RUN)
    synced, real_fsync, real_replace = [], os.fsync, os.replace

    def spy_fsync(descriptor):  # files and folders by inode: the temporary file keeps its own
        synced.append(os.fstat(descriptor).st_ino)
        real_fsync(descriptor)

    def spy_replace(source, destination):
        synced.append(("rename", Path(source).name))
        real_replace(source, destination)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", spy_fsync)
        patch.setattr(os, "replace", spy_replace)
        path = pi.save_netcdf(idata, tmp_path / "run.nc")
    expected = [os.stat(path).st_ino, ("rename", "run.nc.tmp"), os.stat(tmp_path).st_ino]
    # A folder can be opened for syncing on POSIX systems only.
    assert synced == (expected if os.name == "posix" else expected[:2])
    back = az.from_netcdf(path)
    np.testing.assert_array_equal(back.posterior["mu"].values, idata.posterior["mu"].values)
    assert set(back.groups()) == set(idata.groups())
    before = path.read_bytes()

    def half_written(self, temporary, *args, **kwargs):
        Path(temporary).write_bytes(b"CDF\x01 half")
        raise OSError("disk full")

    monkeypatch.setattr(az.InferenceData, "to_netcdf", half_written)
    with pytest.raises(OSError, match="disk full"):
        pi.save_netcdf(idata, path)
    assert path.read_bytes() == before and list(tmp_path.glob("*.tmp")) == []
    with pytest.raises(TypeError, match="arviz.InferenceData"):
        pi.save_netcdf(idata.posterior, tmp_path / "other.nc")


@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte", "no-trailer"])
def test_checked_files_refuse_damaged_content(tmp_path, damage):
    """The amortizers' equinox files carry a SHA-256 trailer; any damage is reported."""
    path = tmp_path / "model.eqx"
    # Content that contains the trailer mark itself: the last mark is the trailer.
    content = b"weights" + CHECKSUM_MARK + b"more weights" * 100
    atomic_write_checked(path, lambda file: file.write(content))
    assert read_checked(path, "Write it again.") == content
    written = path.read_bytes()
    damaged = {
        "truncate": written[:-10],
        "flip-a-byte": written[:50] + bytes([written[50] ^ 0xFF]) + written[51:],
        "no-trailer": content,
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match=f"file {re.escape(str(path))} (has no|does not match)"):
        read_checked(path, "Write it again.")
