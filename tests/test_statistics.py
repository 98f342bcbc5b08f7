"""Statistics of the reports: known intervals, and the error rates simulated sweeps must show."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.report.statistics import (
    CI_LEVEL,
    POWER,
    mean_interval,
    minimum_detectable_difference,
    noise_floor,
    paired_difference,
)

SWEEPS = 2000  # simulated sweeps per rate; a 95% rate is then known to about +-0.5% (1 sd)
SEEDS = 5


def simulated_arms(rng: np.random.Generator, shift: float, noise: float = 0.5
                   ) -> tuple[dict[int, float], dict[int, float]]:
    """Two arms of SEEDS seeds: a per-seed effect shared by both, independent noise, a shift."""
    shared = rng.normal(10.0, 2.0, SEEDS)
    arm = shared + shift + rng.normal(0.0, noise, SEEDS)
    reference = shared + rng.normal(0.0, noise, SEEDS)
    return dict(enumerate(arm)), dict(enumerate(reference))


def test_mean_interval_matches_hand_computed_t_interval() -> None:
    interval = mean_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305 * math.sqrt(5 / 3) / 2  # t_{0.975, 3} * s / sqrt(n), s^2 = 5/3
    assert interval.n == 4
    assert interval.mean == pytest.approx(2.5)
    assert interval.std == pytest.approx(math.sqrt(5 / 3))
    assert interval.low == pytest.approx(2.5 - half)
    assert interval.high == pytest.approx(2.5 + half)
    assert interval.text(".2f") == "2.50 [0.45, 4.55]"


def test_mean_interval_small_and_degenerate_samples() -> None:
    single = mean_interval([3.0, float("nan"), None])
    assert (single.n, single.mean, single.low, single.std) == (1, 3.0, None, None)
    assert single.text(".1f") == "3.0 (n=1)"
    empty = mean_interval([float("nan")])
    assert (empty.n, empty.mean) == (0, None)
    assert empty.text(".1f") == "—"
    flat = mean_interval([2.0, 2.0, 2.0])
    assert (flat.low, flat.mean, flat.high, flat.std) == (2.0, 2.0, 2.0, 0.0)


def test_paired_interval_covers_true_shift_at_its_level() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(SWEEPS):
        diff = paired_difference(*simulated_arms(rng, shift=1.0))
        covered += diff.low <= 1.0 <= diff.high
    assert 0.935 <= covered / SWEEPS <= 0.965


def test_identical_arms_are_significant_at_the_false_positive_rate() -> None:
    rng = np.random.default_rng(1)
    flagged = [paired_difference(*simulated_arms(rng, shift=0.0)) for _ in range(SWEEPS)]
    rate = sum(d.significant for d in flagged) / SWEEPS
    assert 0.035 <= rate <= 0.065
    # The flag and the p value are the same test.
    assert all(d.significant == (d.p_value < 1 - CI_LEVEL) for d in flagged)


def test_paired_detectable_difference_is_detected_with_its_power() -> None:
    rng = np.random.default_rng(2)
    sigma = 0.5 * math.sqrt(2)  # std of a paired difference of two arms with noise 0.5 each
    shift = minimum_detectable_difference(sigma, SEEDS, paired=True)
    hits = sum(paired_difference(*simulated_arms(rng, shift)).significant for _ in range(SWEEPS))
    assert 0.75 <= hits / SWEEPS <= 0.85


def test_unpaired_detectable_difference_is_detected_with_its_power() -> None:
    rng = np.random.default_rng(3)
    sigma = 1.5
    shift = minimum_detectable_difference(sigma, SEEDS, paired=False)
    arm = rng.normal(shift, sigma, (SWEEPS, SEEDS))
    reference = rng.normal(0.0, sigma, (SWEEPS, SEEDS))
    p = stats.ttest_ind(arm, reference, axis=1).pvalue
    assert 0.75 <= np.mean(p < 1 - CI_LEVEL) <= 0.85


def test_detectable_difference_approaches_normal_formula_for_many_seeds() -> None:
    z = stats.norm.ppf(1 - (1 - CI_LEVEL) / 2) + stats.norm.ppf(POWER)
    n, sigma = 4000, 2.0
    paired = minimum_detectable_difference(sigma, n, paired=True)
    unpaired = minimum_detectable_difference(sigma, n, paired=False)
    assert paired == pytest.approx(z * sigma / math.sqrt(n), rel=1e-3)
    assert unpaired == pytest.approx(z * sigma * math.sqrt(2 / n), rel=1e-3)


def test_detectable_difference_undefined_without_degrees_of_freedom_or_spread() -> None:
    assert minimum_detectable_difference(1.0, 1, paired=True) is None
    assert minimum_detectable_difference(1.0, 1, paired=False) is None
    assert minimum_detectable_difference(0.0, 5, paired=True) is None
    assert minimum_detectable_difference(float("nan"), 5, paired=True) is None
    assert minimum_detectable_difference(1.0, 2, paired=True) > 0  # df = 1 still solves
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_difference(1.0, 5, paired=True, power=1.0)


def test_single_pair_is_untested() -> None:
    diff = paired_difference({0: 2.0}, {0: 1.5})
    assert (diff.n, diff.mean, diff.low, diff.high) == (1, 0.5, None, None)
    assert diff.p_value is None and diff.significant is None and diff.detectable is None
    assert diff.text(".2f") == "+0.50 (n=1, untested)"
    assert paired_difference({}, {0: 1.0}).text(".2f") == "—"


def test_pairs_are_matched_by_seed() -> None:
    arm = {0: 1.0, 1: 3.0, 2: 5.0, 3: float("nan"), 7: 100.0}
    reference = {0: 0.0, 1: 1.0, 3: 2.0, 4: -100.0}
    diff = paired_difference(arm, reference)
    assert diff.n == 2  # seeds 0 and 1; 3 is NaN in the arm, 2, 4 and 7 are unpaired
    assert diff.mean == pytest.approx(1.5)
    expected = stats.ttest_rel([1.0, 3.0], [0.0, 1.0])
    assert diff.p_value == pytest.approx(expected.pvalue)
    assert diff.low == pytest.approx(expected.confidence_interval(CI_LEVEL).low)


def test_clear_difference_is_starred_and_constant_differences_are_exact() -> None:
    diff = paired_difference({0: 2.0, 1: 2.1, 2: 1.9}, {0: 0.0, 1: 0.05, 2: -0.05})
    half = 4.302652730 * 0.05 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n), differences 2 +- 0.05
    assert diff.low == pytest.approx(2.0 - half) and diff.high == pytest.approx(2.0 + half)
    assert diff.significant and diff.text(".2f") == "+2.00 [+1.88, +2.12] *"
    same = paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert (same.low, same.high, same.significant, same.p_value) == (0.0, 0.0, False, 1.0)
    shifted = paired_difference({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})
    assert (shifted.low, shifted.high, shifted.significant) == (1.0, 1.0, True)
    assert shifted.detectable is None


def test_noise_floor_interval_covers_true_std() -> None:
    rng = np.random.default_rng(4)
    sigma, covered = 0.7, 0
    for _ in range(1000):
        values = rng.normal(20.0, sigma, SEEDS)
        floor = noise_floor("fid", list(values))
        assert floor.std == pytest.approx(np.std(values, ddof=1))
        assert floor.std_low <= floor.std <= floor.std_high
        covered += floor.std_low <= sigma <= floor.std_high
    assert 0.92 <= covered / 1000 <= 0.98


def test_noise_floor_resolves_less_with_more_seeds() -> None:
    floor = noise_floor("fid", [10.0, 11.0, 12.5, 9.5, 10.5])
    assert floor.resolvable(1) is None
    resolvable = [floor.resolvable(n) for n in (2, 3, 5, 10, 20)]
    assert np.all(np.diff(resolvable) < 0)
    assert noise_floor("fid", [10.0]).resolvable(5) is None
