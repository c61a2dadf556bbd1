"""The one exception the codec raises for a user's mistake, and a range check.

Layer 0: imports nothing of the package.
"""
from __future__ import annotations

import numpy as np


class CAEError(Exception):
    """A user-facing problem: bad input, missing data, a mismatched file or model.

    The message says what is wrong and what to do. The command line prints it as one
    line; notebooks show it without a deep TensorFlow traceback.
    """


def check_int(name: str, value, low: int, high: int) -> int:
    """``value`` as an int if ``low <= value <= high``; a clear :class:`CAEError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise CAEError(f"{name} must be a whole number between {low} and {high}, got {value!r}.")
    if not low <= int(value) <= high:
        raise CAEError(f"{name} must be between {low} and {high}, got {value}.")
    return int(value)
