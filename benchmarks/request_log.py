"""Times one append to the gateway's request log, on this machine's disk.

    python benchmarks/request_log.py [--n 5000] [--calls 2] [--dir DIR]

Appends ``n`` requests of ``calls`` model calls each, one at a time as the
gateway does (one committed transaction per request, WAL mode,
``synchronous=NORMAL``), to a fresh log in a temporary folder (or in ``--dir``,
to measure another disk). Prints appends per second and the median and 99th
percentile of one append.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from xrouter.serve.requestlog import CallEntry, RequestEntry, RequestLog


def entry(n: int, calls: int) -> RequestEntry:
    """A typical entry: a routed request answered by its last call."""
    made = tuple(
        CallEntry(f"model-{k}", 400, 120, 0.00042, 0.8, None, k == 0)
        for k in range(calls)
    )
    return RequestEntry(
        request_id=f"req-{n:08d}",
        ts=time.time(),
        key_name="team-a",
        router="xrouter-policy",
        requested_model="xrouter",
        strategy="single",
        answered_by=(made[-1].model,) if made else (),
        calls=made,
        input_tokens=400 * calls,
        output_tokens=120 * calls,
        cost_usd=0.00042 * calls,
        latency_s=0.8 * calls,
        status=200,
        outcome="ok",
        stream=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="appends to time")
    parser.add_argument("--calls", type=int, default=2, help="model calls each")
    parser.add_argument("--dir", type=Path, default=None, help="folder of the log")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        log = RequestLog(Path(folder) / "requests.sqlite")
        entries = [entry(n, args.calls) for n in range(args.n)]
        seconds = []
        started = time.perf_counter()
        for item in entries:
            before = time.perf_counter()
            log.append(item)
            seconds.append(time.perf_counter() - before)
        elapsed = time.perf_counter() - started
        log.close()

    seconds.sort()
    p99 = seconds[min(len(seconds) - 1, round(0.99 * (len(seconds) - 1)))]
    print(f"{args.n} appends of {args.calls} calls each in {elapsed:.3f} s")
    print(f"{args.n / elapsed:,.0f} appends/s")
    print(
        f"one append: median {statistics.median(seconds) * 1000:.3f} ms, "
        f"p99 {p99 * 1000:.3f} ms"
    )


if __name__ == "__main__":
    main()
