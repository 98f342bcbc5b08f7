"""Statistics every comparison in a report goes through: means, paired differences, noise floors.

Each arm of a sweep is trained at seeds 0..n-1, and arms that share a seed are paired (same data
order, init stream, evaluation latents). With n = 1..10 seeds, intervals and tests here use
Student's t over seeds (scipy.stats): a normal approximation or a bootstrap would be too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

CI_LEVEL = 0.95  # two-sided confidence level of every interval and test
POWER = 0.8  # probability with which a "detectable" difference is detected
METHOD = "Student t over seeds"  # a phrase tables quote in their footnotes
DASH = "—"


def _finite(values: Iterable[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


@dataclass(frozen=True)
class Interval:
    """Mean of a metric over seeds with its CI_LEVEL Student-t interval (None when n < 2)."""

    mean: float | None  # None when n == 0
    low: float | None
    high: float | None
    std: float | None  # sample std (ddof=1); None when n < 2
    n: int  # seeds with a finite value

    def text(self, spec: str) -> str:
        """The mean and its interval formatted with `spec` (e.g. ".2f"); a dash when n == 0."""
        if self.n == 0:
            return DASH
        if self.n == 1:
            return f"{self.mean:{spec}} (n=1)"
        return f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def mean_interval(values: Sequence[float | None], level: float = CI_LEVEL) -> Interval:
    """Mean over seeds with its Student-t interval; None and non-finite values are dropped first.

    With zero spread (all values equal, n >= 2) the interval is the mean itself.
    """
    x = _finite(values)
    n = len(x)
    mean = float(x.mean()) if n else None
    if n < 2:
        return Interval(mean, None, None, None, n)
    std = float(x.std(ddof=1))
    low, high = (mean, mean) if std == 0 else stats.t.interval(
        level, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Interval(mean, float(low), float(high), std, n)


@dataclass(frozen=True)
class Difference:
    """Paired difference arm - reference over the seeds both have."""

    mean: float | None  # None when n == 0
    low: float | None  # CI_LEVEL Student-t interval; None when n < 2
    high: float | None
    n: int  # number of pairs
    p_value: float | None  # two-sided paired t test; None when n < 2
    significant: bool | None  # interval excludes zero; None = untested (n < 2)
    detectable: float | None  # smallest |difference| detected with POWER at this n and spread

    def text(self, spec: str) -> str:
        """The signed difference and its interval, " *" when significant; a dash when n == 0."""
        if self.n == 0:
            return DASH
        if self.n == 1:
            return f"{self.mean:+{spec}} (n=1, untested)"
        star = " *" if self.significant else ""
        return f"{self.mean:+{spec}} [{self.low:+{spec}}, {self.high:+{spec}}]{star}"


def paired_difference(arm: Mapping[int, float | None], reference: Mapping[int, float | None],
                      level: float = CI_LEVEL, power: float = POWER) -> Difference:
    """Paired Student-t comparison of two arms keyed by seed, over seeds finite in both.

    With zero spread of the differences the interval is the mean difference itself, and it is
    significant (p = 0) unless that difference is 0 (p = 1); `detectable` is then None.
    """
    seeds = sorted(s for s in arm.keys() & reference.keys()
                   if len(_finite([arm[s], reference[s]])) == 2)
    d = np.array([arm[s] - reference[s] for s in seeds], dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else None
    if n < 2:
        return Difference(mean, None, None, n, None, None, None)
    std = float(d.std(ddof=1))
    if std == 0:
        return Difference(mean, mean, mean, n, float(mean == 0), mean != 0, None)
    test = stats.ttest_1samp(d, 0.0)
    ci = test.confidence_interval(level)
    low, high = float(ci.low), float(ci.high)
    return Difference(mean, low, high, n, float(test.pvalue), bool(low > 0 or high < 0),
                      minimum_detectable_difference(std, n, paired=True, level=level, power=power))


def minimum_detectable_difference(std: float, n: int, paired: bool, level: float = CI_LEVEL,
                                  power: float = POWER) -> float | None:
    """Smallest true difference a two-sided t test at `level` detects with probability `power`.

    paired=True: one-sample t test on n paired differences whose std is `std`.
    paired=False: two independent arms of n seeds each, each with seed-to-seed std `std`.
    Exact, via the noncentral t distribution; None when the test has no degrees of freedom or
    `std` is 0 or not finite.
    """
    if not 1 - level < power < 1:
        raise ValueError(f"power must lie in ({1 - level}, 1), got {power}")
    df = n - 1 if paired else 2 * n - 2
    if df < 1 or not math.isfinite(std) or std <= 0:
        return None
    t_crit = stats.t.ppf(1 - (1 - level) / 2, df)

    def shortfall(nc: float) -> float:  # P(|T| > t_crit) - power, T ~ noncentral t(df, nc)
        # P(T < -t_crit | nc) = P(T > t_crit | -nc); nct.cdf is NaN deep in that tail.
        return stats.nct.sf(t_crit, df, nc) + stats.nct.sf(t_crit, df, -nc) - power

    upper = 1.0
    while shortfall(upper) < 0:
        upper *= 2
    nc = optimize.brentq(shortfall, 0.0, upper, xtol=1e-10)
    scale = std / math.sqrt(n) if paired else std * math.sqrt(2 / n)  # standard error
    return float(nc * scale)


@dataclass(frozen=True)
class NoiseFloor:
    """Seed-to-seed spread of one metric of one config (the noise_floor sweep)."""

    metric: str
    mean: float | None  # None when n == 0
    std: float | None  # sample std (ddof=1); None when n < 2
    std_low: float | None  # CI_LEVEL chi-square interval of the std; None when n < 2
    std_high: float | None
    n: int  # seeds with a finite value

    def resolvable(self, n: int) -> float | None:
        """Smallest difference between two arms of n seeds each that this spread can resolve."""
        if self.std is None:
            return None
        return minimum_detectable_difference(self.std, n, paired=False)


def noise_floor(metric: str, values: Sequence[float | None]) -> NoiseFloor:
    """Spread of `metric` over seeds (None and non-finite values dropped), with its interval."""
    x = _finite(values)
    n = len(x)
    mean = float(x.mean()) if n else None
    if n < 2:
        return NoiseFloor(metric, mean, None, None, None, n)
    std = float(x.std(ddof=1))
    alpha = 1 - CI_LEVEL
    q_low, q_high = stats.chi2.ppf([1 - alpha / 2, alpha / 2], n - 1)  # (n-1) s^2 / sigma^2
    return NoiseFloor(metric, mean, std, std * math.sqrt((n - 1) / q_low),
                      std * math.sqrt((n - 1) / q_high), n)
