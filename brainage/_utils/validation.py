"""One way to check options and numbers, with one error grammar.

Every message names the parameter, what is allowed and what was given, and suggests the closest
option for an unknown one (as MONAI's ``look_up_option`` and nilearn's
``check_parameter_in_allowed`` do). A bool is never accepted as a number: ``True`` is an ``int``
to Python but never a voxel count or a seed to a user.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # numpy is imported where a vector is checked: `import brainage` stays light
    import numpy as np
    from numpy.typing import ArrayLike

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_vector",
    "closest_hint",
    "dataclass_from_dict",
]

T = TypeVar("T")


def closest_hint(given: object, options: Iterable[object], *, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``given`` (case-insensitive), or ''."""
    by_lower = {str(option).lower(): option for option in options}
    close = difflib.get_close_matches(str(given).lower(), list(by_lower), n=1, cutoff=cutoff)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def check_choice(name: str, value: T, allowed: Iterable[object], *, cutoff: float = 0.6) -> T:
    """Return ``value`` if it is one of ``allowed``; else raise a ``ValueError`` naming both.

    Parameters
    ----------
    name : str
        The parameter, as the user wrote it (``"ModelConfig.depth"``, ``"--space"``).
    value : object
        What was given.
    allowed : iterable
        The options.
    cutoff : float, default=0.6
        Similarity (0-1) an option needs to be suggested.
    """
    options = tuple(allowed)
    if isinstance(value, bool) and not any(isinstance(o, bool) for o in options):
        ok = False  # True == 1: a bool must not pass for the option 1
    else:
        try:
            ok = value in options
        except TypeError:  # unhashable or incomparable values are simply not options
            ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got "
                         f"{value!r}{closest_hint(value, options, cutoff=cutoff)}")
    return value


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def _in_bounds(value: float, low: float | None, high: float | None, low_open: bool,
               high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


def check_int(name: str, value: object, *, low: int | None = None,
              high: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) within the bounds.

    Parameters
    ----------
    name : str
        The parameter, as the user wrote it.
    value : object
        What was given; Python and NumPy integers are accepted.
    low, high : int or None, default=None
        Inclusive bounds (``None``: unbounded).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not _in_bounds(
            int(value), low, high, False, False):
        bounds = _bounds(low, high, False, False)
        raise ValueError(f"{name} must be an integer{' ' + bounds if bounds else ''}, "
                         f"got {value!r}")
    return int(value)


def check_number(name: str, value: object, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 high_open: bool = False) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number (not a bool) within bounds.

    Parameters
    ----------
    name : str
        The parameter, as the user wrote it.
    value : object
        What was given; Python and NumPy integers and floats are accepted.
    low, high : float or None, default=None
        Bounds (``None``: unbounded).
    low_open, high_open : bool, default=False
        Exclude the bound itself (``low_open=True`` with ``low=0``: strictly positive).
    """
    number = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(float(value)))
    if not number or not _in_bounds(float(value), low, high, low_open, high_open):
        bounds = _bounds(low, high, low_open, high_open)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, "
                         f"got {value!r}")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool (``numpy.bool_`` included); else raise ``TypeError``."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def dataclass_from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
    """Instantiate dataclass ``cls`` from ``values``, naming unknown keys and the closest field.

    Raises
    ------
    TypeError
        ``values`` is not a mapping.
    ValueError
        A key is not a field of ``cls``.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"{cls.__name__} settings must be a mapping, got {type(values).__name__}")
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    unknown = [key for key in values if key not in names]
    if unknown:
        hints = ", ".join(f"{key!r}{closest_hint(key, names)}" for key in unknown)
        raise ValueError(f"unknown {cls.__name__} setting(s): {hints}. Allowed: {', '.join(names)}")
    return cls(**dict(values))


def check_vector(name: str, values: ArrayLike, *, min_n: int = 0, finite: bool = True,
                 hint: str = "") -> np.ndarray:
    """``values`` as a 1-D float64 array, or raise naming ``name`` and what is wrong.

    The one check of a vector of numbers (ages, predictions, residuals, bin edges) for
    ``analysis``: a ``TypeError`` for values that are not numbers, a ``ValueError`` for
    another dimensionality, fewer than ``min_n`` values, or (``finite=True``) NaN or infinite
    values, the first of which the message locates; ``hint`` is appended to that message
    (what the caller's user should do).

    Parameters
    ----------
    name : str
        The parameter's name in messages.
    values : array-like, shape (n,)
    min_n : int, default=0
        Fewest values accepted.
    finite : bool, default=True
        Refuse NaN and infinite values.
    hint : str, default=""
        Appended to the NaN message, e.g. ``"; remove or impute them first"``.

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    import numpy as np  # here, not at the top: brainage/__init__ loads _utils (tests/test_cli.py)

    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 1-D array of numbers, got "
                        f"{type(values).__name__}") from err
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size < min_n:
        raise ValueError(f"{name} needs at least {min_n} value(s), got {array.size}")
    if finite:
        bad = ~np.isfinite(array)
        if bad.any():
            raise ValueError(f"{name} holds {int(bad.sum())} NaN or infinite value(s) (first "
                             f"at index {int(np.argmax(bad))}){hint}")
    return array
