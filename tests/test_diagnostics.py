"""Run checks: every problem a Stan user is warned about gives one message with the numbers.

The checks read an ``InferenceData``, so most tests build one from crafted draws (no
sampling): a healthy run of independent draws gives no message, and each defect added to
it gives exactly its own message. The checks are deterministic functions of the draws;
the healthy run's statistics (R-hat ~ 1.000 +- 0.002, ESS ~ 2000 for 2000 independent
draws) are far from the thresholds (1.01, 400), so no test here fails by chance.
"""

import arviz as az
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import probinfer as pi
from probinfer import diagnostics
from probinfer.diagnostics import SamplingWarning, check_run, convergence

CHAINS, DRAWS = 4, 500


def run_data(*, method="nuts", posterior=None, attrs=None, **stats):
    """A healthy run of independent N(0, 1) draws, with ``stats`` overriding defaults."""
    rng = np.random.default_rng(0)
    shape = (CHAINS, DRAWS)
    posterior = posterior or {"mu": rng.normal(size=shape), "beta": rng.normal(size=(*shape, 2))}
    sample_stats = {
        "lp": -0.5 * rng.chisquare(3, size=shape),
        "diverging": np.zeros(shape, bool),
        "acceptance_rate": np.full(shape, 0.8),
        "tree_depth": np.full(shape, 3),
        "energy": rng.normal(size=shape) + 5.0,
        **stats,
    }
    attrs = {"method": method, "num_nonfinite_proposals": 0, **(attrs or {})}
    return az.from_dict(posterior=posterior, sample_stats=sample_stats, attrs=attrs)


def ar1(rho, shape, seed=1):
    """AR(1) chains with unit stationary variance: ESS ~ n (1 - rho) / (1 + rho)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=shape) * np.sqrt(1 - rho**2)
    x = np.empty(shape)
    x[:, 0] = rng.normal(size=shape[0])
    for t in range(1, shape[1]):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    return x


def test_healthy_run_has_no_message():
    assert check_run(run_data(), max_num_doublings=10) == []


def test_divergences_are_counted():
    diverging = np.zeros((CHAINS, DRAWS), bool)
    diverging[1, :7] = True
    (message,) = check_run(run_data(diverging=diverging))
    assert "7 of 2000 transitions after warm-up diverged" in message
    assert "target_acceptance" in message


def divergences_per_chain(*counts):
    """``diverging`` with the first ``counts[c]`` draws of chain ``c`` divergent."""
    diverging = np.zeros((len(counts), DRAWS), bool)
    for chain, count in enumerate(counts):
        diverging[chain, :count] = True
    return diverging


def test_one_chain_holding_most_divergences_is_named_with_its_step_size():
    step_size = np.full((CHAINS, DRAWS), 0.13)
    step_size[0] = 0.18
    diverging = divergences_per_chain(40, 2, 2, 2)
    data = run_data(diverging=diverging, step_size=step_size, attrs={"metric": "dense"})
    (message,) = check_run(data)
    assert "46 of 2000 transitions after warm-up diverged" in message
    assert (
        "Chain 0 holds 40 of the divergences (8% of its transitions, step size 0.18; the "
        "other chains 2 divergences, step size 0.13)"
    ) in message
    assert "metric='diag'" in message
    # After a diagonal metric there is no metric to change.
    data = run_data(diverging=diverging, step_size=step_size, attrs={"metric": "diag"})
    (message,) = check_run(data)
    assert "Chain 0 holds 40" in message and "metric='diag'" not in message


def test_divergences_spread_over_chains_name_no_chain():
    (message,) = check_run(run_data(diverging=divergences_per_chain(14, 9, 10, 11)))
    assert "44 of 2000" in message and "holds" not in message
    # Divergences come in bursts: most of them in one chain at a low rate (gp_poisson's
    # healthy runs: 24 of 33, 2.4% of the chain's transitions) name no chain.
    (message,) = check_run(run_data(diverging=divergences_per_chain(1, 12, 3, 1)))
    assert "17 of 2000" in message and "holds" not in message
    # Over half, at 6%, but only 3.3 times the others' rate: no chain either.
    (message,) = check_run(run_data(diverging=divergences_per_chain(30, 9, 9, 9)))
    assert "57 of 2000" in message and "holds" not in message
    (message,) = check_run(run_data(diverging=divergences_per_chain(38, 9, 9, 9)))
    assert "Chain 0 holds 38" in message


def test_divergent_chain_of_a_thinned_run_is_judged_per_transition():
    """A kept draw of a run thinned by 10 flags a group of 10 transitions: 40 of 500 kept
    draws is at least 0.8% of the transitions, below the 5% threshold; 300 is 6%."""
    (message,) = check_run(
        run_data(diverging=divergences_per_chain(40, 2, 2, 2), attrs={"thin": 10})
    )
    assert "groups of 10 transitions" in message and "holds" not in message
    (message,) = check_run(
        run_data(diverging=divergences_per_chain(300, 2, 2, 2), attrs={"thin": 10})
    )
    assert "Chain 0 holds 300 of the divergences (60% of its kept draws" in message


def test_stuck_chains_are_named():
    acceptance_rate = np.full((CHAINS, DRAWS), 0.8)
    acceptance_rate[3] = 0.0
    messages = check_run(run_data(acceptance_rate=acceptance_rate))
    assert any(m.startswith("chain(s) 3 accepted almost no proposal") for m in messages)
    # Named by their `chain` coordinate, not their position.
    relabelled = run_data(acceptance_rate=acceptance_rate)
    relabelled = relabelled.assign_coords(
        chain=[10, 11, 12, 13], groups=["posterior", "sample_stats"]
    )
    messages = check_run(relabelled)
    assert any(m.startswith("chain(s) 13 accepted almost no proposal") for m in messages)


def test_saturated_trees_are_counted_against_the_limit():
    tree_depth = np.full((CHAINS, DRAWS), 3)
    tree_depth[0, :12] = 6
    assert check_run(run_data(tree_depth=tree_depth), max_num_doublings=7) == []
    (message,) = check_run(run_data(tree_depth=tree_depth), max_num_doublings=6)
    assert "12 of 2000 transitions hit the maximum tree depth (6)" in message
    assert "max_num_doublings" in message
    # pi.sample records the limit in attrs, where check_run finds it by itself.
    (message,) = check_run(run_data(tree_depth=tree_depth, attrs={"max_num_doublings": 6}))
    assert "maximum tree depth (6)" in message


def test_low_ebfmi_names_the_chain():
    """A slowly varying energy (AR(1), rho 0.95: E-BFMI ~ 2 (1 - rho) = 0.1) in chain 2."""
    energy = np.random.default_rng(2).normal(size=(CHAINS, DRAWS))
    energy[2] = ar1(0.95, (1, DRAWS))[0]
    (message,) = check_run(run_data(energy=energy))
    assert "E-BFMI below 0.3 in chain(s) 2: 0.1" in message
    relabelled = run_data(energy=energy).assign_coords(chain=[5, 6, 7, 8], groups="sample_stats")
    (message,) = check_run(relabelled)
    assert "E-BFMI below 0.3 in chain(s) 7: 0.1" in message
    # A thinned run's E-BFMI over every transition comes in attrs; after a selection of
    # chains the attrs still hold all of them, and the kept draws' energies are used.
    thinned = run_data(energy=energy, attrs={"e_bfmi": [1.0, 1.0, 0.05, 1.0]})
    (message,) = check_run(thinned)
    assert "chain(s) 2: 0.05" in message
    (message,) = check_run(thinned.sel(chain=[1, 2, 3]))
    assert "E-BFMI below 0.3 in chain(s) 2: 0.1" in message
    assert check_run(run_data(energy=energy, method="rwm")) == []  # no Hamiltonian energy


def test_rhat_names_the_worst_site_and_component():
    rng = np.random.default_rng(3)
    beta = rng.normal(size=(CHAINS, DRAWS, 2))
    beta[0, :, 1] += 1.0  # chain 0 disagrees about beta[1]
    messages = check_run(run_data(posterior={"mu": rng.normal(size=(CHAINS, DRAWS)), "beta": beta}))
    (rhat,) = [m for m in messages if "R-hat" in m]
    assert "for 'beta'[1]" in rhat and "(above 1.01)" in rhat


def test_low_bulk_and_tail_ess_per_chain():
    """AR(1) with rho 0.95 over 4 x 500 draws: ESS ~ 50, far under 100 per chain."""
    mu = ar1(0.95, (CHAINS, DRAWS))
    messages = check_run(run_data(posterior={"mu": mu}))
    bulk = [m for m in messages if m.startswith("bulk ESS")]
    tail = [m for m in messages if m.startswith("tail ESS")]
    assert len(bulk) == 1 and len(tail) == 1
    assert "for 'mu'" in bulk[0] and "(400 for 4 chains)" in bulk[0]


def test_nonfinite_proposals_during_and_after_warmup():
    (message,) = check_run(run_data(attrs={"num_nonfinite_proposals": 3}), num_warmup_nonfinite=9)
    assert "3 proposals after warm-up (and 9 during it)" in message
    # During warm-up only: reported above 1% of its transitions (4 chains x 100 here).
    warmup = run_data(attrs={"num_warmup": 100})
    assert check_run(warmup, num_warmup_nonfinite=4) == []
    (message,) = check_run(warmup, num_warmup_nonfinite=5)
    assert "5 proposals during warm-up (400 transitions; none after it)" in message
    # HMC's fixed-length trajectories overflow at every too-long warm-up step: from 25%.
    hmc_warmup = run_data(method="hmc", attrs={"num_warmup": 100})
    assert check_run(hmc_warmup, num_warmup_nonfinite=100) == []
    (message,) = check_run(hmc_warmup, num_warmup_nonfinite=101)
    assert "101 proposals during warm-up" in message


@pytest.mark.parametrize(("offset", "expected"), [(2e5, True), (1e4, False)])
def test_float32_energy_precision(offset, expected):
    lp = (-0.5 * np.random.default_rng(4).chisquare(3, size=(CHAINS, DRAWS)) - offset).astype(
        np.float32
    )
    messages = check_run(run_data(lp=lp))
    assert any("jax_enable_x64" in m for m in messages) == expected
    assert not any("jax_enable_x64" in m for m in check_run(run_data(lp=lp.astype(np.float64))))


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # R-hat of 4 x 200
def test_sample_warns_for_a_float32_log_density_of_large_magnitude():
    """|log p| ~ 2e5 in float32 rounds energies by ~0.02 nats: pi.sample says so.

    The position is float32 explicitly, so the run is float32 with or without x64.
    """
    target = pi.LogDensity(lambda x: -0.5 * jnp.sum(x**2) - 2e5, jnp.zeros(2, jnp.float32))
    with pytest.warns(SamplingWarning, match="jax_enable_x64"):
        idata = pi.sample(target, warmup=200, draws=200, progress=False)
    assert {"probinfer_version", "jax_version", "numpyro_version", "device"} <= set(idata.attrs)
    assert idata.attrs["metric"] == "dense"  # the adapted metric: 2 dimensions, NUTS's rule


def test_sample_warns_with_one_message_per_problem():
    """Too few draws of a narrow-stepped RWM: bulk and tail ESS, each warned once."""
    target = pi.LogDensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    with pytest.warns(SamplingWarning) as record:
        pi.sample(target, method="rwm", warmup=0, draws=40, step_size=0.05, progress=False)
    messages = [str(w.message) for w in record]
    assert sum(m.startswith("bulk ESS") for m in messages) == 1
    assert sum(m.startswith("tail ESS") for m in messages) == 1


def test_one_chain_is_checked_without_arviz_log_noise(capfd):
    """One chain: split R-hat (its two halves, as Stan computes it; ArviZ gives NaN) and
    ESS are still computed, so a drifting chain is caught, and no ArviZ "Shape validation
    failed" log line (it wants two chains) is shown to the user."""
    healthy = run_data()

    def first_chain(idata, **posterior):
        return az.from_dict(
            posterior=posterior or {k: v.values[:1] for k, v in idata.posterior.data_vars.items()},
            sample_stats={k: v.values[:1] for k, v in idata.sample_stats.data_vars.items()},
            attrs=dict(idata.attrs),
        )

    az._log.cache.clear()  # ArviZ logs each message once per process
    assert check_run(first_chain(healthy)) == []
    assert "Shape validation" not in capfd.readouterr().err  # ArviZ logs to its own handler
    drifting = np.random.default_rng(3).normal(size=(1, DRAWS)) + np.linspace(0, 1, DRAWS)
    messages = check_run(first_chain(healthy, mu=drifting))
    assert any(m.startswith("R-hat") and "'mu'" in m for m in messages), messages


def _ar1_draws(rng, shape, phi):
    draws = rng.normal(size=shape)
    for t in range(1, shape[1]):
        draws[:, t] = phi * draws[:, t - 1] + np.sqrt(1 - phi**2) * draws[:, t]
    return draws


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # ArviZ on constant draws
def test_convergence_equals_arviz_for_every_component():
    """R-hat and bulk/tail ESS, computed for all components at once, equal ArviZ's to
    float64 rounding: independent, autocorrelated, anti-correlated, heavy-tailed, tied,
    binary, repeated (a tie group at a quantile), shifted-chain, odd-length, short, constant
    and NaN draws, and one chain's ESS."""
    rng = np.random.default_rng(0)
    cases = {
        "iid": rng.normal(size=(4, 400, 3)),
        "ar1": _ar1_draws(rng, (4, 300, 2), 0.9),
        "ar1_odd_long_memory": _ar1_draws(rng, (2, 301, 2), 0.99),
        "anti": _ar1_draws(rng, (3, 200, 2), -0.7),
        "cauchy": rng.standard_cauchy(size=(4, 300, 2)),
        "ties": np.round(rng.normal(size=(3, 50, 3))),
        "repeats": np.repeat(rng.normal(size=(4, 100, 2)), 4, axis=1),  # rejected proposals
        "binary": (rng.uniform(size=(4, 40, 3)) < 0.1).astype(float),
        "shifted_chain": rng.normal(size=(4, 100, 2)) + np.array([0, 0, 0, 3.0])[:, None, None],
        "five_draws": rng.normal(size=(2, 5, 2)),
        "three_draws": rng.normal(size=(2, 3, 2)),
        "constant": np.ones((3, 20, 2)),
        "nan": np.where(rng.uniform(size=(2, 50, 2)) < 0.02, np.nan, 0.0)
        + rng.normal(size=(2, 50, 2)),
    }
    for name, draws in cases.items():
        ours = convergence({"a": draws, "b": draws[..., 0] * 2 + 1})
        dataset = az.convert_to_dataset({"a": draws, "b": draws[..., 0] * 2 + 1})
        theirs = {
            "rhat": az.rhat(dataset),
            "ess_bulk": az.ess(dataset, method="bulk"),
            "ess_tail": az.ess(dataset, method="tail"),
        }
        for field, dataset_values in theirs.items():
            expected = np.concatenate(
                [dataset_values["a"].values.ravel(), dataset_values["b"].values.ravel()]
            )
            np.testing.assert_allclose(
                getattr(ours, field), expected, rtol=1e-10, err_msg=f"{name}: {field}"
            )
    assert ours.labels == ["'a'[0]", "'a'[1]", "'b'"]
    one_chain = rng.normal(size=(1, 200, 2))  # ESS as ArviZ's; R-hat, which it omits, tested above
    dataset = az.convert_to_dataset({"a": one_chain})
    for field, method in (("ess_bulk", "bulk"), ("ess_tail", "tail")):
        expected = az.ess(dataset, method=method)["a"].values
        np.testing.assert_allclose(getattr(convergence({"a": one_chain}), field), expected)


def test_average_ranks_equal_scipys():
    """The rank normalisation's ranks are SciPy's average ranks: ties (rounded draws, -0.0
    and 0.0, infinities), a constant column, and NaN (the whole column NaN)."""
    rng = np.random.default_rng(1)
    columns = np.stack(
        [
            rng.normal(size=400),
            np.round(rng.normal(size=400)),
            np.where(rng.uniform(size=400) < 0.5, -0.0, 0.0),
            np.where(rng.uniform(size=400) < 0.1, np.inf, rng.normal(size=400)),
            np.full(400, 2.5),
            np.where(rng.uniform(size=400) < 0.02, np.nan, rng.normal(size=400)),
        ],
        axis=1,
    )
    expected = scipy.stats.rankdata(columns, axis=0, method="average")
    np.testing.assert_array_equal(diagnostics._average_ranks(columns), expected)


def test_convergence_blocks_span_sites_and_keep_each_result(monkeypatch):
    """Sites are processed together in blocks of columns that may start in one site and end
    in the next (and sites of other shapes on their own): every component's result is the
    one it gets alone, to float64 rounding, with the labels in site order."""
    rng = np.random.default_rng(1)
    posterior = {
        "a": _ar1_draws(rng, (4, 100, 3), 0.5),
        "b": rng.normal(size=(4, 100)),
        "c": rng.integers(0, 3, size=(4, 100, 2, 2)),
        "d": rng.normal(size=(2, 60, 2)),  # other chains and draws: a group of its own
        "e": rng.normal(size=(4, 100, 0)),
        "f": rng.normal(size=(4, 100, 5)).astype(np.float32),
        "g": rng.normal(size=(4, 3, 2)),  # too few draws: NaN, between two groups
        "h": rng.normal(size=(3, 100, 4)).transpose(2, 1, 0),  # strided, not contiguous
        "i": rng.normal(size=(4, 100, 2)),
    }
    alone = [convergence({name: values}) for name, values in posterior.items()]
    expected = [np.concatenate([r[field] for r in alone]) for field in range(3)]
    for block_values in (400 * 2, 400 * 3, 2**18):  # blocks of 2 and 3 columns, and one
        monkeypatch.setattr("probinfer.diagnostics.CONVERGENCE_BLOCK_VALUES", block_values)
        together = convergence(posterior)
        for field in range(3):
            np.testing.assert_allclose(together[field], expected[field], rtol=1e-12)
            assert np.isnan(together[field][15:17]).all()  # site "g"
        assert together.labels == [label for r in alone for label in r.labels]
