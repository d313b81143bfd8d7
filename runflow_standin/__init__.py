"""A stand-in for Runflow: a real HTTP server that plays Runflow's API by its contract
(docs/runflow-api.md), for the tests (over real sockets) and for trying sam3web by hand.

    python -m runflow_standin --port 8765 --key demo-key [--broke-key KEY]
        [--complete-after SECONDS] [--outcome failed] [--output-shape top_level]
        [--callback-secret whsec_...] [--callback-delay SECONDS]

It is strict where the contract is clear (auth, the SAM 3 input schema, idempotency keys, the
asset flow) so mistakes in the app show up here rather than against the real service, and it has
knobs to misbehave on purpose (rate limits, outages, slow answers, scripted answers, broken or
expired result files, callback receivers that fail). The input is validated by sam3web's own
``segmentation.schema``, the one statement of SAM 3's input in the project.

Runs finish like Runflow's when asked to (``complete_after``, ``finish``): queued → running →
a terminal state, with a SAM 3 output whose masks are drawn from the prompts (``sam3``, so tests
can check geometry), mask files served lazily from memory, and a signed, retried callback.

Layout: ``server.RunflowStandin`` holds all state behind one lock and answers requests in plain
Python (``dispatch`` → one method per route → a ``Reply``); its ``_Handler`` only speaks HTTP.
Timers and callback deliveries run on their own daemon threads, never on a request's thread.
"""

from __future__ import annotations

from runflow_standin.server import (
    MAX_ASSET_BYTES,
    OUTCOMES,
    OUTPUT_SHAPES,
    CallbackAttempt,
    RecordedRequest,
    RunflowStandin,
)

__all__ = [
    "MAX_ASSET_BYTES",
    "OUTCOMES",
    "OUTPUT_SHAPES",
    "CallbackAttempt",
    "RecordedRequest",
    "RunflowStandin",
]
