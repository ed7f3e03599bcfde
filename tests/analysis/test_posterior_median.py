"""The floor of a simulated cohort: the best predictor of age from the true biological age."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from brainage.analysis.metrics import irreducible_error, posterior_median_age


def test_posterior_median_is_b_inside_the_range_and_pulled_in_at_its_ends():
    out = posterior_median_age([60.0, 18.0, 20.0, 100.0, 103.0], 3.0, (20, 100))
    assert out[0] == pytest.approx(60.0, abs=1e-9)  # far from both ends: b itself
    assert 20 < out[1] < out[2] < 60 < out[3] < out[4] < 100  # inside the prior, monotone
    assert out[2] - 20 == pytest.approx(100 - out[3], abs=1e-9)  # symmetric prior, symmetric pull
    # the median of N(20, 3^2) truncated to [20, 100]: the half-normal's median above 20
    assert out[2] == pytest.approx(20 + 3 * stats.norm.ppf(0.75), abs=1e-6)


def test_posterior_median_beats_predicting_b_on_a_simulated_cohort(rng):
    age = rng.uniform(20, 100, 20000)
    biological = age + rng.normal(0, 3.0, age.size)
    floor = float(np.mean(np.abs(posterior_median_age(biological, 3.0, (20, 100)) - age)))
    naive = irreducible_error(age, biological)
    assert naive == pytest.approx(3.0 * np.sqrt(2 / np.pi), rel=0.02)  # E|delta|
    assert floor < naive - 0.05  # the ends of the age range give information away
    # a brain-only predictor cannot beat it: shrinking b towards the middle is worse
    shrunk = 60 + 0.97 * (biological - 60)
    assert floor < float(np.mean(np.abs(shrunk - age)))


@pytest.mark.parametrize(("sigma", "age_range", "match"), [
    (0.0, (20, 100), "sigma must be a finite number > 0"),
    (float("nan"), (20, 100), "sigma must be a finite number"),
    (3.0, (100, 20), "low < high"),
    (3.0, (20,), r"age_range must be \(low, high\)"),
    (3.0, (20, float("inf")), r"age_range\[1\] must be a finite number"),
])
def test_posterior_median_rejects_bad_settings(sigma, age_range, match):
    with pytest.raises(ValueError, match=match):
        posterior_median_age([50.0, 60.0], sigma, age_range)


def test_posterior_median_rejects_bad_ages():
    with pytest.raises(ValueError, match="biological_age"):
        posterior_median_age([50.0, float("nan")], 3.0, (20, 100))
    with pytest.raises(TypeError, match="biological_age must be a 1-D array of numbers"):
        posterior_median_age(["a", "b"], 3.0, (20, 100))
