"""The experiment statistics against published worked examples and known quantiles."""

from __future__ import annotations

import math

import pytest

from dunning.stats import chi_square_sf, goodness_of_fit_p, newcombe_difference, planned_per_group, wilson


# Newcombe (1998a), "Two-sided confidence intervals for the single proportion: comparison of seven
# methods", Stat Med 17:857-872, Table I, method 3 (Wilson score, no continuity correction).
@pytest.mark.parametrize(
    ("x", "n", "lower", "upper"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombes_worked_examples(x: int, n: int, lower: float, upper: float) -> None:
    lo, hi = wilson(x, n)
    assert (round(lo, 4), round(hi, 4)) == (lower, upper)


# Newcombe (1998b), "Interval estimation for the difference between independent proportions:
# comparison of eleven methods", Stat Med 17:873-890, Table II, method 10 (hybrid score).
@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "lower", "upper"),
    [
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0),
        (10, 10, 0, 10, 0.6075, 1.0),
    ],
)
def test_newcombe_hybrid_score_matches_the_worked_examples(x1: int, n1: int, x2: int, n2: int, lower: float, upper: float) -> None:
    lo, hi = newcombe_difference(x1, n1, x2, n2)
    assert (round(lo, 4), round(hi, 4)) == (lower, upper)


@pytest.mark.parametrize(
    ("statistic", "df", "p"),
    [(3.841458820694124, 1, 0.05), (5.991464547107979, 2, 0.05), (7.814727903251178, 3, 0.05), (10.827566170662733, 1, 0.001), (0.0, 2, 1.0)],
)
def test_chi_square_survival_at_known_quantiles(statistic: float, df: int, p: float) -> None:
    assert chi_square_sf(statistic, df) == pytest.approx(p, abs=1e-9)


def test_chi_square_agrees_with_closed_forms() -> None:
    for x in (0.1, 1.0, 4.0, 12.5, 40.0):
        assert chi_square_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)  # df 2: exp(-x/2)
        assert chi_square_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9, abs=1e-15)


def test_goodness_of_fit_of_the_sample_ratio() -> None:
    assert goodness_of_fit_p([500, 500], [1, 1]) == pytest.approx(1.0)
    # 450 vs 550 against 50/50: chi-square 10 on 1 df.
    assert goodness_of_fit_p([450, 550], [1, 1]) == pytest.approx(math.erfc(math.sqrt(5)), rel=1e-9)
    assert goodness_of_fit_p([0, 0], [1, 1]) is None


def test_planned_sample_by_the_normal_approximation() -> None:
    # 50 % → 55 %, α 0.05 two-sided, power 0.8: the textbook 1,565 per group (Fleiss, no correction).
    assert planned_per_group(0.5, 0.05) == 1565
    assert planned_per_group(0.5, 0.10) == 388
    assert planned_per_group(0.5, 0.05, alpha=0.025) > 1565  # a Bonferroni split asks for more
