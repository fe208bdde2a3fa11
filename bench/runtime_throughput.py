"""What the consumer runtime costs per event, against a hand-written loop on the same servers.

Why this exists: every step runs inside `infra.bus.runtime.ConsumerApp`, which adds an inbox
check, an outbox row, a post-commit publish and metrics around the handler. It pays for them
by handling what is waiting in batches (`ConsumerSpec.batch_size` messages per transaction:
one inbox lookup, multi-row inserts, one commit), which should buy at least 3x the
throughput of the simplest loop that gives the same per-event guarantees (fetch one message,
commit its inbox row, publish the derived event with its `Nats-Msg-Id` and wait for the
PubAck, ack), without making tail latency more than 1.5x worse. This script measures both
on one nats-server and one PostgreSQL with fsync on (production durability), prints the
figures and the ratios, and asserts nothing about timing: the figures belong to the machine
they ran on. `--batch-size 1` shows the runtime's per-message path (one transaction each).

It also starts the whole embedded stack (`orchestrator up`) and prints its resident memory.

    python bench/runtime_throughput.py [--events 5000] [--rate 200] [--duration 5]
        [--batch-size 100] [--pool-size 20] [--no-stack-memory]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import psycopg
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from psycopg.types.json import Jsonb

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from contracts import events as ev  # noqa: E402
from contracts.envelope import Event  # noqa: E402
from contracts.topology import H_MSG_ID, NOTIFY, ConsumerSpec, StreamSpec  # noqa: E402
from infra.bus.codec import decode, encode  # noqa: E402
from infra.bus.runtime import ConsumerApp, StepContext  # noqa: E402
from infra.bus.topology import apply_consumers, apply_topology  # noqa: E402
from infra.db.migrate import upgrade  # noqa: E402
from infra.logging import configure_logging  # noqa: E402
from infra.settings import Settings  # noqa: E402
from infra.stack.nats_server import NatsServer  # noqa: E402
from infra.stack.postgres_server import PostgresServer  # noqa: E402

# The benchmark's input lives in a stream of its own, one subject per phase, so each durable
# sees exactly its phase's events; the derived events go where production puts them (NOTIFY).
BENCH_STREAM = StreamSpec("BENCH", ("bench.>",), "Benchmark input events")
STACK_READY_LINE = "local stack up"
THROUGHPUT_TARGET = 3.0
P99_TARGET = 1.5


# ---------------------------------------------------------------------------- the work itself


def derived_notification(event: Event, consumer: str) -> ev.NotificationRequested:
    """The one event both contenders emit per input: deterministic id, as every step's is."""
    assert isinstance(event, ev.ProjectRequested)
    return event.derive(
        ev.NotificationRequested,
        actor=consumer,
        user_id=event.user_id,
        kind=ev.NotificationKind.INFO,
        text="benchmark",
    )


def input_events(count: int) -> list[ev.ProjectRequested]:
    return [
        ev.ProjectRequested(
            correlation_id=uuid.uuid4(),
            actor="bench",
            project_id=uuid.uuid4(),
            description="a benchmark project",
            user_id="cli:bench",
            source="cli",
        )
        for _ in range(count)
    ]


class Tracker:
    """Publish and completion instants (one `perf_counter` clock, one process) per event id."""

    def __init__(self) -> None:
        self.published: dict[uuid.UUID, float] = {}
        self.done: dict[uuid.UUID, float] = {}
        self._awaited: set[uuid.UUID] = set()
        self._all_done = asyncio.Event()

    def mark_done(self, event_id: uuid.UUID) -> None:
        self.done.setdefault(event_id, time.perf_counter())
        self._awaited.discard(event_id)
        if not self._awaited:
            self._all_done.set()

    async def wait_done(
        self, ids: Sequence[uuid.UUID], limit: float, worker: asyncio.Task[Any]
    ) -> None:
        """Return once every id is handled; raise if `worker` stops first or `limit` passes."""
        self._awaited = {i for i in ids if i not in self.done}
        self._all_done.clear()
        if not self._awaited:
            return
        waiter = asyncio.ensure_future(self._all_done.wait())
        await asyncio.wait([waiter, worker], timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            return
        waiter.cancel()
        if worker.done():
            worker.result()  # its exception says why
            raise RuntimeError("the consumer stopped before handling every event")
        raise TimeoutError(
            f"{len(self._awaited)} of {len(ids)} events not handled within {limit:.0f}s"
        )

    def throughput(self, ids: Sequence[uuid.UUID]) -> float:
        """Events per second from the first to the last completion among `ids`.

        Events that complete at the first instant (the first batch) only start the clock, so
        a batch is not counted as done in no time.
        """
        instants = sorted(self.done[i] for i in ids)
        span = instants[-1] - instants[0]
        later = sum(1 for instant in instants if instant > instants[0])
        return later / span if span > 0 else math.inf

    def latencies_ms(self, ids: Sequence[uuid.UUID]) -> list[float]:
        return [(self.done[i] - self.published[i]) * 1000 for i in ids]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def publish_backlog(js: JetStreamContext, subject: str, events: Sequence[Event]) -> None:
    """Publish everything at once (PubAcks awaited in chunks), before any consumer runs."""
    chunk = 256
    for start in range(0, len(events), chunk):
        await asyncio.gather(*(_publish(js, subject, e) for e in events[start : start + chunk]))


async def publish_paced(
    js: JetStreamContext, subject: str, events: Sequence[Event], rate: float, tracker: Tracker
) -> None:
    """Publish at a fixed rate; the clock starts just before each publish (its PubAck counts)."""
    start = time.perf_counter()
    for index, event in enumerate(events):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tracker.published[event.event_id] = time.perf_counter()
        await _publish(js, subject, event)


async def _publish(js: JetStreamContext, subject: str, event: Event) -> None:
    _, body, headers = encode(event)
    await js.publish(subject, body, stream=BENCH_STREAM.name, headers=headers)


# ---------------------------------------------------------------------------- contenders


def bench_spec(contender: str, batch_size: int = 1) -> ConsumerSpec:
    """Each contender's durable sees only its own subjects: `bench.<contender>.>`."""
    return ConsumerSpec(
        f"bench-{contender}",
        "bench",
        BENCH_STREAM,
        (f"bench.{contender}.>",),
        contender,
        batch_size=batch_size,
    )


def handle_with(app: ConsumerApp) -> ConsumerApp:
    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> Event:
        return derived_notification(event, ctx.consumer)

    return app


def _event_id(msg: Msg) -> uuid.UUID:
    return uuid.UUID((msg.headers or {})[H_MSG_ID])


class TimedConsumerApp(ConsumerApp):
    """The runtime as production runs it, noting when each fetched batch is fully handled.

    `process_batch` returns once every message of the batch is acked (its rows committed and
    its derived events published), so that instant is each message's completion.
    """

    tracker: Tracker

    async def process_batch(self, spec: ConsumerSpec, msgs: Sequence[Msg]) -> None:
        await super().process_batch(spec, msgs)
        for msg in msgs:
            self.tracker.mark_done(_event_id(msg))


@contextlib.asynccontextmanager
async def serving(app: TimedConsumerApp) -> AsyncIterator[asyncio.Task[int]]:
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    try:
        yield task
    finally:
        stop.set()
        await task


async def baseline_loop(
    js: JetStreamContext,
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    spec: ConsumerSpec,
    tracker: Tracker,
) -> None:
    """One event at a time, one commit per event: the loop a careful person writes by hand."""
    sub = await js.pull_subscribe(spec.subjects[0], durable=spec.durable, stream=BENCH_STREAM.name)
    while True:
        try:
            messages = await sub.fetch(1, timeout=1.0)
        except NatsTimeoutError:
            continue
        for msg in messages:
            event = decode(msg.subject, msg.data, msg.headers)
            derived = derived_notification(event, spec.durable)
            subject, body, headers = encode(derived)
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO inbox (consumer, event_id, result_event_ids, processed_at)"
                    " VALUES (%s, %s, %s, now())",
                    (spec.durable, event.event_id, Jsonb([str(derived.event_id)])),
                )
            await js.publish(subject, body, stream=NOTIFY.name, headers=headers)
            await msg.ack()
            tracker.mark_done(event.event_id)


@contextlib.asynccontextmanager
async def baseline(
    nats_url: str, db_url: str, spec: ConsumerSpec, tracker: Tracker
) -> AsyncIterator[asyncio.Task[None]]:
    nc = await nats.connect(nats_url)
    try:
        async with await psycopg.AsyncConnection.connect(plain_url(db_url)) as conn:
            task = asyncio.create_task(baseline_loop(nc.jetstream(), conn, spec, tracker))
            try:
                yield task
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await nc.close()


@dataclass(frozen=True)
class Options:
    events: int
    rate: float
    duration: float
    batch_size: int
    pool_size: int
    timeout: float

    @property
    def latency_events(self) -> int:
        return max(1, round(self.rate * self.duration))


@dataclass(frozen=True)
class Counters:
    """Cumulative counters read before and after a contender runs."""

    cpu_seconds: float
    transactions: int
    wal_syncs: int


def read_counters(db_url: str) -> Counters:
    with psycopg.connect(plain_url(db_url)) as conn:
        xacts = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
        wal = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
    assert xacts is not None and wal is not None
    return Counters(time.process_time(), int(xacts[0]), int(wal[0]))


@dataclass(frozen=True)
class Result:
    name: str
    throughput: float
    latencies_ms: list[float]
    cpu_ms_per_event: float
    transactions_per_event: float
    wal_syncs_per_event: float


class Bench:
    """One contender at a time on the shared servers: its backlog, then its paced events."""

    def __init__(self, nats_url: str, db_url: str, js: JetStreamContext, options: Options) -> None:
        self.nats_url = nats_url
        self.db_url = db_url
        self.js = js
        self.options = options

    def settings(self) -> Settings:
        return Settings(
            nats={"url": self.nats_url},
            database={"url": self.db_url, "pool_size": self.options.pool_size},
        )

    def contender(
        self, name: str, tracker: Tracker
    ) -> contextlib.AbstractAsyncContextManager[asyncio.Task[Any]]:
        if name == "baseline":
            return baseline(self.nats_url, self.db_url, bench_spec(name), tracker)
        spec = bench_spec(name, self.options.batch_size)
        app = TimedConsumerApp("bench", settings=self.settings(), specs=[spec])
        app.tracker = tracker
        handle_with(app)
        return serving(app)

    async def measure(self, name: str, backlog: Sequence[Event]) -> Result:
        options = self.options
        tracker = Tracker()
        paced = input_events(options.latency_events)
        before = await asyncio.to_thread(read_counters, self.db_url)
        async with self.contender(name, tracker) as worker:
            await tracker.wait_done([e.event_id for e in backlog], options.timeout, worker)
            await publish_paced(self.js, f"bench.{name}.latency", paced, options.rate, tracker)
            await tracker.wait_done([e.event_id for e in paced], options.timeout, worker)
        # Closed connections flush their statistics as their backends exit.
        await asyncio.sleep(0.5)
        after = await asyncio.to_thread(read_counters, self.db_url)
        handled = len(backlog) + len(paced)
        return Result(
            name=name,
            throughput=tracker.throughput([e.event_id for e in backlog]),
            latencies_ms=tracker.latencies_ms([e.event_id for e in paced]),
            cpu_ms_per_event=(after.cpu_seconds - before.cpu_seconds) * 1000 / handled,
            transactions_per_event=(after.transactions - before.transactions) / handled,
            wal_syncs_per_event=(after.wal_syncs - before.wal_syncs) / handled,
        )


# ---------------------------------------------------------------------------- servers


def plain_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def reachable_temp_dir(prefix: str) -> Iterator[Path]:
    """A temp dir the postgres user can enter (mkdtemp makes it 0700, owned by us)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def prepare(nats_url: str, db_url: str, nc: Client, specs: Sequence[ConsumerSpec]) -> None:
    await asyncio.to_thread(upgrade, db_url)
    await apply_topology(nats_url)
    jsm = nc.jsm()
    await jsm.add_stream(
        StreamConfig(
            name=BENCH_STREAM.name,
            subjects=list(BENCH_STREAM.subjects),
            storage=StorageType.FILE,
            duplicate_window=120.0,
        )
    )
    await apply_consumers(jsm, tuple(specs))


async def run_benchmark(options: Options) -> tuple[list[Result], dict[str, int]]:
    contenders = ["runtime", "baseline"]
    # Production logging (structlog JSON, secret masking) stays on; only the bytes are dropped.
    devnull = open(os.devnull, "w")  # noqa: ASYNC230, SIM115 -- /dev/null never blocks
    configure_logging("bench", stream=devnull)
    try:
        with (
            reachable_temp_dir("orchestrator-bench-") as base,
            NatsServer(base / "nats") as nats_server,
            PostgresServer(base / "postgres", fsync=True) as postgres,
        ):
            nc = await nats.connect(nats_server.url)
            try:
                specs = [bench_spec("runtime", options.batch_size), bench_spec("baseline")]
                await prepare(nats_server.url, postgres.url, nc, specs)
                js = nc.jetstream()
                backlogs = {name: input_events(options.events) for name in contenders}
                for name, events in backlogs.items():
                    await publish_backlog(js, f"bench.{name}.backlog", events)
                bench = Bench(nats_server.url, postgres.url, js, options)
                results = []
                for name in contenders:
                    results.append(await bench.measure(name, backlogs[name]))
                    print(f"{name} measured", flush=True)
                checks = await consistency_checks(nc, postgres.url, contenders)
            finally:
                await nc.close()
    finally:
        devnull.close()
    return results, checks


async def consistency_checks(nc: Client, db_url: str, contenders: Sequence[str]) -> dict[str, int]:
    """Rows and messages actually written, so a fast number cannot hide lost work."""
    with psycopg.connect(plain_url(db_url)) as conn:
        rows: dict[object, object] = dict(
            conn.execute("SELECT consumer, count(*) FROM inbox GROUP BY consumer").fetchall()
        )
        unpublished = conn.execute(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        ).fetchone()
    info = await nc.jsm().stream_info(NOTIFY.name)
    checks = {f"inbox rows {name}": int(str(rows.get(f"bench-{name}", 0))) for name in contenders}
    checks["outbox rows unpublished"] = int(unpublished[0]) if unpublished else 0
    checks["derived events in NOTIFY"] = int(info.state.messages)
    return checks


# ---------------------------------------------------------------------------- stack memory


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    label: str
    rss_kb: int
    pss_kb: int


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it do not.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _kb(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _label(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
    args = [a.decode(errors="replace") for a in argv if a]
    if "-m" in args[:-1]:
        return args[args.index("-m") + 1]
    return comm


def process_tree(root: int) -> list[ProcessMemory]:
    """`root` and every descendant, with RSS and PSS (shared pages split between sharers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (parent := _ppid(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    found: list[ProcessMemory] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        found.append(
            ProcessMemory(
                pid,
                _label(pid),
                _kb(Path(f"/proc/{pid}/status"), "VmRSS"),
                _kb(Path(f"/proc/{pid}/smaps_rollup"), "Pss"),
            )
        )
        pending.extend(children.get(pid, []))
    return found


def measure_stack_memory(timeout: float, settle: float) -> list[ProcessMemory]:
    """Start `orchestrator up`, wait for its ready line, read /proc, stop it with SIGINT."""
    with reachable_temp_dir("orchestrator-bench-stack-") as state:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "--state-dir", str(state), "up"],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        output: list[str] = []

        def pump() -> None:
            assert launcher.stdout is not None
            for line in launcher.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise TimeoutError(
                        f"`orchestrator up` did not print {STACK_READY_LINE!r} within "
                        f"{timeout:.0f}s; its output:\n{''.join(output[-30:])}"
                    ) from None
                if line is None:
                    raise RuntimeError(
                        f"`orchestrator up` exited with code {launcher.wait()} before it was up; "
                        f"its output:\n{''.join(output[-30:])}"
                    )
                output.append(line)
                if STACK_READY_LINE in line:
                    break
            time.sleep(settle)
            return process_tree(launcher.pid)
        finally:
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()


# ---------------------------------------------------------------------------- report


def _verdict(ratio: float, target: float, *, at_least: bool) -> str:
    met = ratio >= target if at_least else ratio <= target
    return f"{'>=' if at_least else '<='} {target:g}x {'met' if met else 'MISSED'}"


def report(options: Options, results: list[Result], checks: dict[str, int]) -> str:
    """The figures as a table: one column per contender, then each one's ratio to the baseline."""
    base = next(r for r in results if r.name == "baseline")
    others = [r for r in results if r is not base]
    ordered = [*others, base]

    def p(result: Result, q: float) -> float:
        return percentile(result.latencies_ms, q)

    header = ["", *(r.name for r in ordered), *(f"{r.name}/baseline" for r in others), "target"]
    rows: list[list[str]] = [header]

    def row(label: str, value: Callable[[Result], float], fmt: str, target: str = "") -> None:
        values = [value(r) for r in ordered]
        ratios = [value(r) / value(base) if value(base) else math.inf for r in others]
        rows.append(
            [label, *(format(v, fmt) for v in values), *(f"{x:.2f}x" for x in ratios), target]
        )

    tput_ratio = others[0].throughput / base.throughput
    p99_ratio = p(others[0], 99) / p(base, 99)
    row(
        "throughput (events/s)",
        lambda r: r.throughput,
        ".0f",
        f"runtime {_verdict(tput_ratio, THROUGHPUT_TARGET, at_least=True)}",
    )
    row("latency p50 (ms)", lambda r: p(r, 50), ".1f")
    row(
        "latency p99 (ms)",
        lambda r: p(r, 99),
        ".1f",
        f"runtime {_verdict(p99_ratio, P99_TARGET, at_least=False)}",
    )
    row("CPU per event (ms, bench process)", lambda r: r.cpu_ms_per_event, ".2f")
    row("transactions per event", lambda r: r.transactions_per_event, ".2f")
    row("WAL syncs per event", lambda r: r.wal_syncs_per_event, ".2f")
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = [
        f"{options.events} events backlog per contender; latency at {options.rate:g} events/s "
        f"for {options.duration:g}s ({options.latency_events} events); runtime batch size "
        f"{options.batch_size}, pool {options.pool_size}; PostgreSQL fsync on",
    ]
    for cells in rows:
        lines.append(
            "  ".join(
                cell.ljust(w) if i in (0, len(header) - 1) else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )
    lines.append("checks: " + ", ".join(f"{k} {v}" for k, v in checks.items()))
    return "\n".join(lines)


def memory_report(processes: list[ProcessMemory]) -> str:
    by_label: dict[str, list[ProcessMemory]] = {}
    for proc in processes:
        by_label.setdefault(proc.label, []).append(proc)
    total_rss = sum(p.rss_kb for p in processes)
    total_pss = sum(p.pss_kb for p in processes)
    lines = [
        f"stack memory (`orchestrator up`, {len(processes)} processes): "
        f"RSS sum {total_rss / 1024:.0f} MiB, PSS sum {total_pss / 1024:.0f} MiB"
    ]
    for label, group in sorted(by_label.items(), key=lambda kv: -sum(p.rss_kb for p in kv[1])):
        rss = sum(p.rss_kb for p in group)
        pss = sum(p.pss_kb for p in group)
        lines.append(
            f"  {label:<28} x{len(group):<3} RSS {rss / 1024:7.1f} MiB  PSS {pss / 1024:7.1f} MiB"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="backlog size per contender")
    parser.add_argument("--rate", type=float, default=200.0, help="latency phase: events/s")
    parser.add_argument("--duration", type=float, default=5.0, help="latency phase: seconds")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="runtime: messages handled per transaction (the bench durable's batch_size)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=defaults.database.pool_size,
        help="runtime: database connections (as many again may overflow)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="longest wait for one phase, seconds"
    )
    parser.add_argument(
        "--no-stack-memory", action="store_true", help="skip starting `orchestrator up`"
    )
    parser.add_argument(
        "--stack-timeout", type=float, default=120.0, help="longest wait for `orchestrator up`"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.events < 2:
        raise SystemExit("--events must be at least 2 (throughput is measured between events)")
    if args.batch_size < 1:
        raise SystemExit("--batch-size must be at least 1")
    options = Options(
        events=args.events,
        rate=args.rate,
        duration=args.duration,
        batch_size=args.batch_size,
        pool_size=args.pool_size,
        timeout=args.timeout,
    )
    results, checks = asyncio.run(run_benchmark(options))
    print(report(options, results, checks), flush=True)
    if not args.no_stack_memory:
        print(memory_report(measure_stack_memory(args.stack_timeout, settle=3.0)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
