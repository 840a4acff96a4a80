"""The multiplication experts mult2 and mult10 (being designed)."""

from __future__ import annotations

from dfst.experts.spec import ExpertSpec


def multiplication_expert(radix: int) -> ExpertSpec:
    """Build the multiplication expert for ``radix``."""
    raise NotImplementedError(f"the mult{radix} expert is not built yet")
