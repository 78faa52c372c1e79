"""The compiled gain-loss steps give exactly the numbers of the numpy rules they replace."""

from __future__ import annotations

import numpy as np

from carbon.rules import dynamics
from carbon.rules.dynamics import INVALID


def _history(seed: int, n: int = 4000, k: int = 6, n_years: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Land-cover stacks with runs, changes, flicker and years without data."""
    rng = np.random.default_rng(seed)
    classes = np.empty((n_years, n), dtype=np.int32)
    classes[0] = rng.integers(0, k, n)
    for i in range(1, n_years):
        change = rng.random(n) < 0.2
        classes[i] = np.where(change, rng.integers(0, k, n), classes[i - 1])
    classes[rng.random(classes.shape) < 0.05] = INVALID
    years = np.array([2000, 2003, 2004, 2010, 2024][:n_years])
    return classes, years


def test_soc_weights_compiled_are_the_numpy_weights_bit_for_bit() -> None:
    for seed in range(3):
        classes, years = _history(seed)
        for soc_years in (1, 20):
            expected = list(dynamics.soc_weights(classes, years, 6, soc_years))
            got = list(dynamics._soc_weights(classes, years, 6, soc_years))
            assert len(got) == len(expected)
            for a, b in zip(expected, got, strict=True):
                assert a is not None and b is not None
                assert np.array_equal(a, b)


def test_soc_sums_by_class_are_the_numpy_sums_bit_for_bit() -> None:
    classes, years = _history(7)
    w = np.random.default_rng(7).random(classes.shape[1]) * 0.09
    for i, lam in enumerate(dynamics.soc_weights(classes, years, 6, 20)):
        assert lam is not None
        for sel in (classes[i] != INVALID, (classes[i] != INVALID) & (classes[0] != INVALID)):
            expected = dynamics._by_class(classes[i][sel], lam[sel], w[sel], 6)
            assert np.array_equal(dynamics._soc_by_class(sel, classes[i], lam, w, 6), expected)


def test_gain_loss_aggregates_keep_their_numbers() -> None:
    """Aggregates.add on a stack, against the sums worked out with the numpy rules alone."""
    classes, years = _history(3, n=3000, k=5, n_years=3)
    w = np.random.default_rng(3).random(classes.shape[1]) * 0.09
    agg = dynamics.Aggregates(5, [int(y) for y in years], [(int(years[0]), int(years[1])),
                                                           (int(years[1]), int(years[2]))])
    agg.add(classes, w, dynamics.Dynamics("gain_loss"))
    filtered, _ = dynamics.filter_flicker(classes, years)
    for i, lam in enumerate(dynamics.soc_weights(filtered, years, 5, dynamics.SOC_TRANSITION_YEARS)):
        assert lam is not None
        v = filtered[i] != INVALID
        assert np.array_equal(agg.soc[int(years[i])], dynamics._by_class(filtered[i][v], lam[v], w[v], 5))


def test_history_and_age_sums_compiled_are_the_numpy_rules_bit_for_bit() -> None:
    from carbon.rules import kernels

    for seed in range(3):
        classes, years = _history(seed, n=3000)
        w = np.random.default_rng(seed).random(classes.shape[1]) * 0.09
        for flicker, init in ((True, None), (False, 5)):
            filtered, changed = dynamics.filter_flicker(classes, years) if flicker else (classes, None)
            start, _, span = dynamics.run_history(filtered, years)
            valid = filtered != INVALID
            span = np.where(start >= 0, span, 1)
            ages = np.empty(filtered.shape, dtype=np.int64)
            for i, y in enumerate(years):
                a = np.where(start[i] == -1, -1 if init is None else init + (y - years[0]), y - start[i])
                ages[i] = np.where(valid[i], a, -2)
            out, flick, k_start, k_span, k_ages = kernels.history(
                classes, years, 0 if init is None else init, init is not None, flicker,
                dynamics.MAX_FLICKER_SPAN_YEARS)
            assert np.array_equal(out, filtered) and np.array_equal(k_start, start)
            assert np.array_equal(k_span, span) and np.array_equal(k_ages, ages)
            if changed is not None:
                assert np.array_equal(flick, changed)
            agg = dynamics.Aggregates(6, [int(y) for y in years], [])
            for i in range(len(years)):
                for sel in (valid[i], valid[i] & valid[0]):
                    expected = agg._hist(filtered[i][sel], ages[i][sel], w[sel], span[i][sel])
                    got = np.zeros(6 * dynamics.N_AGE)
                    kernels.age_hist_add(sel, filtered[i], ages[i], w, span[i], dynamics.N_AGE,
                                         dynamics.AGE_MAX, got)
                    assert np.array_equal(got.reshape(6, -1), expected)
