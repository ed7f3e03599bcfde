"""The one vector check of ``analysis`` (:func:`brainage._utils.validation.check_vector`), which
replaced three copies (``metrics._as_vector``, ``uncertainty._vector``, ``site_calibration._ages``).
"""

from __future__ import annotations

import numpy as np
import pytest

from brainage._utils import check_vector


@pytest.mark.parametrize("values", [[1, 2.5, 3], (4.0,), np.arange(7, dtype=np.int16)])
def test_check_vector_returns_a_float64_vector(values: object) -> None:
    out = check_vector("age", values)
    assert out.dtype == np.float64 and out.ndim == 1
    np.testing.assert_allclose(out, np.asarray(values, dtype=float))


@pytest.mark.parametrize(
    ("values", "options", "error", "message"),
    [
        (["a", "b"], {}, TypeError, "age must be a 1-D array of numbers, got list"),
        ([[1, 2], [3, 4]], {}, ValueError, r"age must be 1-D, got shape \(2, 2\)"),
        ([1.0], {"min_n": 2}, ValueError, r"age needs at least 2 value\(s\), got 1"),
        ([1.0, np.nan, np.inf], {}, ValueError,
         r"age holds 2 NaN or infinite value\(s\) \(first at index 1\)"),
        ([1.0, np.nan], {"hint": "; leave them out"}, ValueError, "index 1\\); leave them out"),
    ],
)
def test_check_vector_refuses_bad_vectors(values: object, options: dict, error: type,
                                          message: str) -> None:
    with pytest.raises(error, match=message):
        check_vector("age", values, **options)


def test_check_vector_keeps_nan_when_told() -> None:
    out = check_vector("y_hat", [1.0, np.nan], finite=False)
    assert np.isnan(out[1]) and out[0] == 1.0


@pytest.mark.parametrize("module", ["metrics", "uncertainty", "site_calibration"])
def test_analysis_has_no_vector_checker_of_its_own(module: str) -> None:
    # the three copies are wrappers of check_vector: their bodies hold no np.asarray of their own
    import inspect

    import brainage.analysis.metrics as metrics
    import brainage.analysis.site_calibration as site_calibration
    import brainage.analysis.uncertainty as uncertainty

    wrapper = {"metrics": metrics._as_vector, "uncertainty": uncertainty._vector,
               "site_calibration": site_calibration._ages}[module]
    source = inspect.getsource(wrapper)
    assert "check_vector(" in source and "np.asarray" not in source
