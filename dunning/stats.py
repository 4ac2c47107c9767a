"""The statistics of the experiment report, from the published formulas (pure, standard library).

- `wilson`: Wilson's score interval for one proportion (Wilson 1927; Newcombe 1998a, method 3).
- `newcombe_difference`: the interval for a difference of two independent proportions by
  Newcombe's hybrid score method (Newcombe 1998b, "Interval estimation for the difference between
  independent proportions: comparison of eleven methods", Stat Med 17:873-890, method 10).
- `chi_square_sf`: the chi-square survival function (the p-value of the goodness-of-fit test of
  the sample ratio), through the regularized upper incomplete gamma function (series and
  continued fraction, as in Numerical Recipes §6.2).
- `planned_per_group`: cases per arm for a two-sided comparison of two proportions at a given
  significance and power (the normal approximation, Fleiss, without continuity correction).

Checked against the worked examples of Newcombe's papers and known quantiles in
tests/unit/test_stats.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

Interval = tuple[float, float]


def z_for(alpha: float) -> float:
    """The two-sided critical value: 1.959964 for α = 0.05."""
    return NormalDist().inv_cdf(1 - alpha / 2)


def wilson(successes: int, trials: int, z: float = z_for(0.05)) -> Interval:
    """Wilson's score interval (no continuity correction); (0, 1) for no trials."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_difference(x1: int, n1: int, x2: int, n2: int, z: float = z_for(0.05)) -> Interval:
    """Interval for p1 − p2 by Newcombe's hybrid score method (method 10): the Wilson limits of
    each proportion, combined as δ − √((p1−l1)² + (u2−p2)²) and δ + √((u1−p1)² + (p2−l2)²)."""
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    delta = p1 - p2
    lower = delta - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = delta + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, lower), min(1.0, upper))


# --- chi-square ------------------------------------------------------------------------------


def _gamma_p_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    ap = a
    for _ in range(10_000):
        ap += 1
        term *= x / ap
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_q_continued_fraction(a: float, x: float) -> float:
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x)."""
    if x <= 0:
        return 1.0
    if x < a + 1:
        return max(0.0, 1.0 - _gamma_p_series(a, x))
    return min(1.0, _gamma_q_continued_fraction(a, x))


def chi_square_sf(statistic: float, df: int) -> float:
    """P(χ²_df ≥ statistic)."""
    return gamma_q(df / 2, statistic / 2)


def goodness_of_fit_p(observed: Sequence[int], weights: Sequence[float]) -> float | None:
    """Pearson's chi-square test of observed counts against the expected shares of `weights`:
    the p-value (None without observations)."""
    total = sum(observed)
    if total == 0 or len(observed) < 2:
        return None
    weight_sum = sum(weights)
    statistic = 0.0
    for count, weight in zip(observed, weights, strict=True):
        expected = total * weight / weight_sum
        statistic += (count - expected) ** 2 / expected
    return chi_square_sf(statistic, len(observed) - 1)


# --- planned sample ------------------------------------------------------------------------


def planned_per_group(baseline: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Cases per group to find `baseline` → `baseline + effect` with a two-sided test at `alpha`
    with probability `power`:  n = (z_{1−α/2}·√(2·p̄·q̄) + z_{1−β}·√(p1·q1 + p2·q2))² / δ²."""
    p1, p2 = baseline, baseline + effect
    mean = (p1 + p2) / 2
    z_a = z_for(alpha)
    z_b = NormalDist().inv_cdf(power)
    root = z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root * root / (effect * effect))
