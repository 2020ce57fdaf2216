"""Latency and throughput of the gateway over loopback, and its budget under load.

    python benchmarks/gateway_load.py [--requests 400] [--budget-requests 200]
        [--paths direct,bypass,learned] [--no-budget] [--torch-threads N]
        [--profile] [--work DIR]

An upstream echo server (``tests/upstream.py``, no model time) runs in a process
of its own and the gateway (``xrouter serve --config ...``, one worker) in
another; this process sends chat requests over loopback with httpx, ``--requests``
per row: to the upstream directly, then through the gateway with routing bypassed
(a pool model by name) and with the learned router (``model="xrouter"``: the prompt
embedding and the policy network run for every request), each at concurrency 1
and 32. Every prompt is new, so nothing is answered from a cache. The table gives
p50 and p99 latency and requests per second; what the gateway adds to the direct
call's p50 and p99 at the same concurrency; and the CPU time the gateway and the
upstream processes spent per request (from /proc, so Linux only).

Then a gateway with a small global daily limit gets waves of ``--budget-requests``
concurrent requests until a whole wave is refused; after each wave the spend that
the request log recorded is printed against the limit, which it must never pass.

The pool is three ZeroEval models behind the echo server, and the policy is
trained in seconds on their records over stand-in embeddings (the gateway embeds
every request with the static embedding the checkpoint names); both are kept in
``--work`` for the next run.
``--profile`` runs the gateway under cProfile and prints where its time went;
``--torch-threads`` sets the gateway's OMP_NUM_THREADS. All three processes share
this machine's cores, so other work on it shows in the figures: the load average
is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gateway_server import GPT, MODELS, ROUTES, flood  # noqa: E402

CONCURRENCY = (1, 32)
BUDGET_USD = 2e-4
TASKS = ("gsm", "math-l5", "crux")


@dataclass(frozen=True)
class Row:
    path: str
    concurrency: int
    latencies_s: list[float]
    wall_s: float
    cpu_s: dict[str, float]  # CPU seconds each server process spent on the row

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def per_s(self) -> float:
        return len(self.latencies_s) / self.wall_s

    def cpu_ms(self, process: str) -> float:
        """CPU milliseconds ``process`` spent per request."""
        return self.cpu_s.get(process, math.nan) * 1e3 / len(self.latencies_s)


def cpu_s(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far (Linux; else NaN)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


# -- the processes ------------------------------------------------------------------


def serve_upstream() -> None:
    """Run the echo server until stdin closes; its port goes to stdout."""
    from upstream import UpstreamServer

    with UpstreamServer() as server:
        print(server.port, flush=True)
        sys.stdin.read()


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    if not port.isdigit():
        process.kill()
        raise SystemExit("the upstream server did not start")
    return process, f"http://127.0.0.1:{port}/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Gateway:
    """``xrouter serve --config CONFIG`` in a child process."""

    def __init__(
        self, config: Path, home: Path, profile: Path | None, threads: int | None
    ) -> None:
        self.port = free_port()
        command = [str(Path(sys.executable).with_name("xrouter")), "serve"]
        command += ["--config", str(config), "--port", str(self.port)]
        if profile is not None:
            command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command]
        env = os.environ | {"XROUTER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        if threads is not None:  # torch's threads for the embedding and policy
            env["OMP_NUM_THREADS"] = str(threads)
        self.process = subprocess.Popen(command, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit("the gateway did not become healthy; see its output")

    def stop(self) -> None:
        """Stop as Ctrl-C does, so that a profile is written."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- what the gateway serves --------------------------------------------------------


def prepare(work: Path, data: Path, upstream_url: str) -> tuple[Path, Path]:
    """The policy checkpoint and the pool, made once under ``work``."""
    from gateway_server import train_checkpoint, write_config

    from xrouter.core.catalog import load_catalog
    from xrouter.records.ingest import ingest
    from xrouter.records.store import Store

    policy = work / "policy"
    if not (policy / "manifest.json").is_file():
        sample = work / "data" / "zeroeval"
        (sample / "raw_gz").mkdir(parents=True, exist_ok=True)
        for task in TASKS:
            for model in MODELS:
                name = f"{task}__{model}.json.gz"
                shutil.copy(data / "zeroeval" / "raw_gz" / name, sample / "raw_gz")
        shutil.copy(data / "zeroeval" / "official_accuracy.json", sample)
        store = Store(work / "store")
        ingest(work / "data", store, load_catalog(), ["zeroeval"])
        train_checkpoint(store, policy)
    config = write_config(work / "gateway.yaml", upstream_url, policy)
    return policy, config


# -- load ---------------------------------------------------------------------------


def body(model: str, k: int, tag: str) -> dict[str, Any]:
    question = f"{tag} question {k}: what is {k} times {k + 3}, and why?"
    return {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 16,
    }


async def run(
    url: str, model: str, n: int, concurrency: int, tag: str, pids: dict[str, int]
) -> Row:
    """``n`` requests from ``concurrency`` senders, each waiting for its answer."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def send(k: int) -> float:
            started = time.perf_counter()
            reply = await client.post("/chat/completions", json=body(model, k, tag))
            took = time.perf_counter() - started
            if reply.status_code != 200:
                raise SystemExit(f"{url} answered {reply.status_code}: {reply.text}")
            return took

        for k in range(min(n, 2 * concurrency)):  # warm: connections, caches
            await send(-1 - k)
        todo = iter(range(n))
        latencies: list[float] = []

        async def sender() -> None:
            for k in todo:
                latencies.append(await send(k))

        cpu = {name: cpu_s(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        cpu = {name: cpu_s(pid) - cpu[name] for name, pid in pids.items()}
        return Row(tag, concurrency, latencies, wall, cpu)


def latency_table(rows: list[Row]) -> None:
    direct = {r.concurrency: r for r in rows if r.path == "direct"}
    head = f"{'path':<18}{'conc':>5}{'p50 ms':>9}{'p99 ms':>10}{'req/s':>7}"
    head += f"{'+p50 ms':>10}{'+p99 ms':>10}{'gw cpu':>8}{'up cpu':>8}"
    print(f"\n{head}\n{'':<49}(added to direct) (CPU ms a request)")
    for r in rows:
        line = f"{r.path:<18}{r.concurrency:>5}{r.quantile(0.5) * 1e3:>9.2f}"
        line += f"{r.quantile(0.99) * 1e3:>10.2f}{r.per_s:>7.0f}"
        base = direct.get(r.concurrency, r)
        if r is base:
            line += f"{'':>20}"
        else:
            line += f"{(r.quantile(0.5) - base.quantile(0.5)) * 1e3:>10.2f}"
            line += f"{(r.quantile(0.99) - base.quantile(0.99)) * 1e3:>10.2f}"
        line += f"{r.cpu_ms('gateway'):>8.2f}{r.cpu_ms('upstream'):>8.2f}"
        print(line.replace("nan", "  -"))


def measure(
    args: argparse.Namespace, upstream: subprocess.Popen[str], url: str, config: Path
) -> None:
    profile = args.work / "gateway.prof" if args.profile else None
    gateway = Gateway(config, args.work / "home", profile, args.torch_threads)
    pids = {"gateway": gateway.process.pid, "upstream": upstream.pid}
    rows = []
    try:
        for concurrency in CONCURRENCY:
            paths = {
                "direct": ("direct", url, ROUTES[GPT]),
                "bypass": ("gateway, bypass", f"{gateway.url}/v1", GPT),
                "learned": ("gateway, learned", f"{gateway.url}/v1", "xrouter"),
            }
            for tag, target, model in (paths[p] for p in args.paths):
                row = run(target, model, args.requests, concurrency, tag, pids)
                rows.append(asyncio.run(row))
    finally:
        gateway.stop()
    latency_table(rows)
    if profile is not None and profile.exists():
        print(f"\ngateway process, by own time (cProfile, {profile}):")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)


def budget(args: argparse.Namespace, upstream_url: str, policy: Path) -> None:
    from gateway_server import write_config

    from xrouter.serve.requestlog import RequestLog

    log_path = args.work / "budget.sqlite"
    for stale in args.work.glob("budget.sqlite*"):
        stale.unlink()
    config = write_config(
        args.work / "budget.yaml",
        upstream_url,
        policy,
        daily_limit_usd=BUDGET_USD,
        log={"path": str(log_path)},
    )
    gateway = Gateway(config, args.work / "home", None, args.torch_threads)
    midnight = time.time() // 86_400 * 86_400
    n = args.budget_requests
    print(f"\n{n} concurrent requests a wave, global daily limit ${BUDGET_USD:.6f}")
    print(
        f"{'wave':>5}{'served':>8}{'refused':>9}{'logged spend $':>16}{'limit $':>11}"
    )
    passed = False
    try:
        for wave in range(1, 51):
            statuses = flood(f"{gateway.url}/v1", "-", n)
            log = RequestLog(log_path)
            try:
                spent = log.spend(midnight)
            finally:
                log.close()
            passed = passed or spent > BUDGET_USD
            served = statuses.count(200)
            print(
                f"{wave:>5}{served:>8}{statuses.count(429):>9}"
                f"{spent:>16.8f}{BUDGET_USD:>11.6f}"
            )
            if served == 0:
                break
    finally:
        gateway.stop()
    print("the spend passed the limit" if passed else "the spend never passed it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="per table row")
    parser.add_argument(
        "--budget-requests", type=int, default=200, help="per wave of the budget run"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/xrouter-gateway-load"),
        help="folder for the store, policy, configs and logs (kept)",
    )
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data", help="records"
    )
    parser.add_argument(
        "--paths",
        type=lambda text: text.split(","),
        default=["direct", "bypass", "learned"],
        help="which of direct,bypass,learned to time (direct is the baseline)",
    )
    parser.add_argument("--no-budget", action="store_true", help="skip the budget run")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS of the gateway (default: torch's own choice)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream()
        return

    args.work.mkdir(parents=True, exist_ok=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average before the run: {load}")
    upstream, upstream_url = start_upstream()
    try:
        policy, config = prepare(args.work, args.data, upstream_url)
        measure(args, upstream, upstream_url, config)
        if not args.no_budget:
            budget(args, upstream_url, policy)
    finally:
        assert upstream.stdin is not None
        upstream.stdin.close()  # the server stops when its stdin closes
        upstream.wait(timeout=15)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average after the run: {load}; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
