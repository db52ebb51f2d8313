"""The cyclic garbage collector in Sangyu's long-running processes (API workers, job workers)."""

from __future__ import annotations

import gc

# Container objects allocated (less those freed) between two collections of the youngest generation in a process
# that runs jobs. CPython's default is 700; the older generations keep their default ratios to it.
JOBS_YOUNG_THRESHOLD = 50_000


def settle_long_lived_objects() -> None:
    """Once started, move everything that exists (modules, the app, SQLAlchemy's mappers and caches: about
    200,000 objects) out of the cyclic garbage collector's sight. They live as long as the process, but every
    full collection would walk them all again: that was about a tenth of a worker's CPU under a payment storm.
    Startup garbage is collected first, so nothing that should be freed is kept."""
    gc.collect()
    gc.freeze()


def settle_for_jobs() -> None:
    """``settle_long_lived_objects``, and collect the youngest generation every 50,000 allocations instead of
    700, in a process that runs jobs. A job works on a batch (a thousand meals placed, then served) whose
    objects stay alive across its awaits. At 700 the collector ran hundreds of times during each batch, found
    the batch's objects alive, moved them to the older generations and walked those again and again: that
    was a third of the attribution benchmark's Python time. At 50,000 most of a batch is freed by reference
    counting before the youngest generation is next collected. Cyclic garbage then waits longer to be freed,
    at most 50,000 objects' worth (a few megabytes)."""
    settle_long_lived_objects()
    gc.set_threshold(JOBS_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
