"""The range of ``--seed``: what torch's CPU generator really uses.

``torch.Generator().manual_seed(s)`` accepts any s in [-2^63, 2^64) but seeds its Mersenne Twister
(mt19937) from the low 32 bits only, so seeds 0 and 2^32 gave identical fits and 2^64 overflowed. Seeds
are therefore integers in [0, 2^32 - 1]: every accepted seed is a different stream, and a seed outside
that range is refused instead of silently aliased. (Streams derived inside inrdiag, such as the batch
sampler's ``seed + 1``, may wrap modulo 2^32 near the top of the range; they stay different streams of
one run.)
"""

from __future__ import annotations

import numbers

from .errors import InrdiagError

SEED_MIN = 0
SEED_MAX = 2**32 - 1


def check_seed(seed: object, name: str = "--seed") -> int:
    """``seed`` as an int, or an InrdiagError naming the value and the allowed range."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InrdiagError(f"{name} must be an integer in [{SEED_MIN}, {SEED_MAX}] (2^32 - 1), got {seed!r}")
    value = int(seed)
    if not SEED_MIN <= value <= SEED_MAX:
        raise InrdiagError(f"{name} must be in [{SEED_MIN}, {SEED_MAX}] (2^32 - 1: torch's CPU generator uses "
                           f"32 bits of the seed), got {seed}")  # fmt: skip
    return value
