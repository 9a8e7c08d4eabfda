"""``LoadOptions``: what the file cannot tell, from the loading flags."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import SpecError
from ...models.spec import ACTIVATIONS, ENCODINGS, OUT_ACTIVATIONS, PE_CONVENTIONS

#: What every refusal offers besides the flags: run the user's own model class instead of a rebuilt one.
MODEL_CODE = "--model-code FILE.py:Class"


def flag(name: str) -> str:
    """The CLI flag of a ``LoadOptions`` field (``w0_hidden`` -> ``--w0-hidden``)."""
    return "--" + name.replace("_", "-")


@dataclass
class LoadOptions:
    """What the file cannot tell, from flags (``None``: not given). Same names as the CLI flags."""

    activation: str | None = None
    w0: float | None = None
    w0_hidden: float | None = None
    encoding: str | None = None
    frequencies: int | None = None
    head: int | None = None
    out_activation: str | None = None
    pe_convention: str | None = None
    pe_min_exp: float | None = None
    pe_max_exp: float | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("activation", ACTIVATIONS), ("encoding", ENCODINGS),
                              ("out_activation", OUT_ACTIVATIONS), ("pe_convention", PE_CONVENTIONS)):  # fmt: skip
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or v not in allowed):
                raise SpecError(f"unknown {flag(name)} {v!r}; allowed: {', '.join(allowed)}")
        for name in ("w0", "w0_hidden", "pe_min_exp", "pe_max_exp"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                raise SpecError(f"{flag(name)} must be a finite number, got {v!r}")
            if name.startswith("w0") and not v > 0:
                raise SpecError(f"{flag(name)} must be positive, got {v}")
        for name, lo in (("frequencies", 1), ("head", 0)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise SpecError(f"{flag(name)} must be an integer >= {lo}, got {v!r}")
