"""The range check every config dataclass runs in `__post_init__`: a size of 0, a negative weight or a NaN
would otherwise surface later as a torch error deep inside a layer, or train a model that cannot work."""

from __future__ import annotations

import math
from typing import Any


def check_bounds(config: Any, *, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the first field of `positive` that is not > 0 or of `non_negative` that is
    not >= 0 (floats must also be finite)."""
    for names, strict in ((positive, True), (non_negative, False)):
        for name in names:
            value = getattr(config, name)
            finite = not isinstance(value, float) or math.isfinite(value)
            if not finite or (value <= 0 if strict else value < 0):
                raise ValueError(f"{name} must be {'>' if strict else '>='} 0 and finite, got {value}")
