"""A periodic task (``distqueue worker --tasks tests.periodic_tasks``): its worker
sets the schedule on the server when it connects."""

from __future__ import annotations

import distqueue


@distqueue.periodic(every=1, name="tick-every-second", args=("tick",))
def tick(word: str) -> str:
    return word.upper()
