"""``python -m runflow_standin``: the stand-in on a port, for trying sam3web by hand."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from runflow_standin.server import OUTCOMES, OUTPUT_SHAPES, RunflowStandin


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a Runflow stand-in for trying sam3web.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", action="append", help="a valid API key (repeatable)")
    parser.add_argument("--broke-key", action="append", default=[], help="a key with no credit")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    parser.add_argument(
        "--complete-after",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="runs finish by themselves this long after creation (default 2; negative: never)",
    )
    parser.add_argument("--outcome", choices=OUTCOMES, default="succeeded")
    parser.add_argument("--output-shape", choices=OUTPUT_SHAPES, default="model_data")
    parser.add_argument("--callback-secret", help="sign callbacks with this secret")
    args = parser.parse_args(argv)
    keys = args.key or ["demo-key"]
    standin = RunflowStandin(
        api_keys=keys,
        broke_keys=args.broke_key,
        host=args.host,
        port=args.port,
        verbose=not args.quiet,
    )
    # A person trying the app by hand should see runs finish, unlike a test's default.
    standin.complete_after = args.complete_after if args.complete_after >= 0 else None
    standin.outcome = args.outcome
    standin.output_shape = args.output_shape
    standin.callback_secret = args.callback_secret
    # SIGTERM (a process manager, or a test: background jobs started by a shell ignore SIGINT)
    # stops as cleanly as Ctrl+C.
    signal.signal(signal.SIGTERM, _interrupt)
    standin.start()
    print(f"Runflow stand-in listening on {standin.base_url}", flush=True)
    print("Point the app at it with:", flush=True)
    print(f"  RUNFLOW_BASE_URL={standin.base_url} RUNFLOW_API_KEY={keys[0]}", flush=True)
    if standin.complete_after is None:
        print("Runs stay queued (--complete-after is negative).", flush=True)
    else:
        print(f"Runs end {args.outcome} {standin.complete_after:g} s after creation.", flush=True)
    print("Ctrl+C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
