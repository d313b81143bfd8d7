"""`manage.py prune`: what is safe to remove. (Being written.)"""

from __future__ import annotations


def prune_if_due() -> None:
    """Run prune when the schedule says it is time (cheap when it is not)."""
    return None
