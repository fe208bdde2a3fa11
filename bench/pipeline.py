"""The pipeline where a person waits: one project, then N at once, on the embedded stack.

Why this exists (issue 12): a user feels the time from a description to a live service, the
time twenty people's requests take together, how fast the CLI answers, how much memory the
stack holds and how soon `orchestrator up` is ready. This script starts `orchestrator up`
offline in a fresh state directory and prints each figure, with the ratio the goal is stated
in (N at once within 3x of one). It asserts nothing about timing: the figures belong to the
machine they ran on, and a busy machine shows in them (the load average is printed).

    python bench/pipeline.py [--projects 20] [--timeout 1800]
    python bench/pipeline.py --up-only     # `orchestrator up` alone, then stop

With `--up-only` it starts the stack, prints the `orchestrator up` figures below and the
stack's RSS, PSS and CPU seconds at the moment it is ready, and stops it.

What it prints:
- `orchestrator up`: seconds until the ready line, and each process's seconds to `/readyz`;
- the CLI: `--help` and `status` wall time (median of 5; `status` both right after a project
  went live and once the machine is quiet again);
- one project (an HTTP API) from `orchestrator request` to live, and the machine's CPU seconds
  it took;
- N at once (mixed kinds: HTTP API, Telegram bot, worker; a bot's token is stored when its
  deploy waits for it, as its owner would): time to the first live, to all live, the ratio to
  one project, and the machine's CPU seconds per project over the batch (all processes: the
  stack, its sandboxes, Ansible, the deployed services' start), and the stack's processes that
  used most of it (each with the children it reaped: the deployer's Ansible runs; processes
  the tree does not reap, such as deployed services and the engineer's sandboxes, are missing
  from it, so it is a partial split of the machine's figure); and the CPU floor: the batch's
  CPU seconds over the cores, the least wall time any scheduling could reach, as a ratio to
  one project (one project already keeps both cores of a two-core machine busy, so N at once
  cannot take less than about N times as long unless each project costs less CPU);
- the stack's peak resident memory over the run, RSS and PSS, summed over its process tree.

Every project is archived at the end (the product's own clean-up: service, releases, user and
secrets) and the stack is stopped.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from infra.stack.stack_info import read_stack_info  # noqa: E402

READY_LINE = "stop with Ctrl-C"
KINDS = (
    "An HTTP API that keeps my notes over REST, called {name}",
    "A Telegram bot that records my expenses by category, called {name}",
    "A background worker that every hour goes through my tasks, called {name}",
)
SETTLED = ("active", "failed")


@dataclass
class Stack:
    state_dir: Path
    process: subprocess.Popen[str]
    database_url: str
    ready_seconds: float
    table: list[str] = field(default_factory=list)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", "--state-dir", str(self.state_dir), *args],
            cwd=REPO_ROOT, capture_output=True, text=True, input=stdin, timeout=300,
            check=False,
        )  # fmt: skip

    def states(self, ids: list[str]) -> dict[str, str]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT id::text, state FROM projects WHERE id::text = ANY(%s)", (ids,)
            ).fetchall()
        return {str(row[0]): str(row[1]) for row in rows}


def start_stack(state_dir: Path) -> Stack:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "--state-dir", str(state_dir), "up"],
        cwd=REPO_ROOT, env={**os.environ, "ORCH_LLM__PROVIDER": "offline"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    table: list[str] = []
    for line in process.stdout:
        table.append(line.rstrip())
        if READY_LINE in line:
            break
    ready = time.monotonic() - started
    info = read_stack_info(state_dir)
    if info is None:
        process.kill()
        raise SystemExit("the stack did not come up:\n" + "\n".join(table[-40:]))
    # Keep draining the stack's output so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
    url = info.database_url.replace("postgresql+psycopg://", "postgresql://")
    return Stack(state_dir, process, url, ready, table)


def tree(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """Summed RSS and PSS (KiB) of `pids`, from smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


class MemoryPeak(threading.Thread):
    """Samples the stack's tree every second and keeps the peak sums."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.rss = self.pss = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            rss, pss = memory_kib(tree(self.root))
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)


def busy_cpu_seconds() -> float:
    """The machine's busy CPU time since boot (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_label(pid: int) -> str:
    """A short name for a stack process: the module of `python -m x.y`, else the program
    (a process forked from the zygote is named after its child, the zygote itself "zygote")."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [arg.decode(errors="replace") for arg in argv if arg]
    if "infra.stack.zygote" in words and Path(f"/proc/{pid}/comm").exists():
        # A process forked from the zygote keeps its command line; its name is the child's.
        return Path(f"/proc/{pid}/comm").read_text().strip()
    if "-m" in words[:-1]:
        parts = words[words.index("-m") + 1].split(".")
        while len(parts) > 1 and parts[-1] in ("__main__", "main", "app"):
            parts.pop()
        return parts[-1]
    return Path(words[0]).name if words else "?"


def cpu_by_process(root: int) -> dict[tuple[int, str], float]:
    """CPU seconds each process of the tree used, with the children it has reaped (so a
    deployer's count holds its Ansible runs). A process reaped outside the tree is not counted."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[tuple[int, str], float] = {}
    for pid in tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14 to 17 of stat (11 to 14 after the name).
        found[(pid, process_label(pid))] = sum(int(v) for v in fields[11:15]) / ticks
    return found


def cpu_table(before: dict[tuple[int, str], float], after: dict[tuple[int, str], float]) -> str:
    """The processes that used the most CPU between two snapshots, by label."""
    used: dict[str, float] = {}
    for key, seconds in after.items():
        used[key[1]] = used.get(key[1], 0.0) + seconds - before.get(key, 0.0)
    top = sorted(used.items(), key=lambda item: -item[1])[:10]
    return ", ".join(f"{label} {seconds:.0f}" for label, seconds in top if seconds >= 0.5)


def measure_ready(stack: Stack) -> None:
    """The stack's figures at the moment it is ready: memory, CPU used to get there; then stop."""
    try:
        pids = tree(stack.process.pid)
        rss, pss = memory_kib(pids)
        cpu = sum(cpu_by_process(stack.process.pid).values())
        print(f"orchestrator up: ready line after {stack.ready_seconds:.1f} s "
              f"(load average {os.getloadavg()[0]:.2f} at ready)")  # fmt: skip
        for line in stack.table:
            if "/readyz" in line or "(HTTP API)" in line:
                print("  " + " ".join(line.split()))
        print(
            f"at ready: {len(pids)} processes, RSS {rss / 1024**2:.2f} GiB, "
            f"PSS {pss / 1024**2:.2f} GiB, CPU {cpu:.1f} s (the tree, with what it reaped)"
        )
    finally:
        stack.process.send_signal(signal.SIGINT)
        stack.process.wait(timeout=120)
        shutil.rmtree(stack.state_dir, ignore_errors=True)


def wait_until_quiet(limit: float = 120.0, window: float = 1.0, busy_share: float = 0.1) -> float:
    """Seconds until the machine's CPU was busy less than `busy_share` of one `window` (all
    cores), at most `limit`: a project that just went live still has the indexer reading its
    release and its service starting, and "under 1 s on a quiet machine" is timed after."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = busy_cpu_seconds()
        time.sleep(window)
        if busy_cpu_seconds() - before < busy_share * window * (os.cpu_count() or 1):
            break
    return time.monotonic() - started


def median_wall(command: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO_ROOT, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def request(stack: Stack, description: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "--state-dir", str(stack.state_dir),
         "request", description],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def project_id(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=600)
    found = re.search(r"project ([0-9a-f-]{36})", out)
    if process.returncode != 0 or not found:
        raise SystemExit(f"orchestrator request failed: {err or out}")
    return found.group(1)


def wait_all(stack: Stack, ids: list[str], started: float, timeout: float) -> list[float]:
    """Seconds from `started` until each project settled; stores bots' tokens on the way."""
    settled: dict[str, float] = {}
    tokens: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(settled) < len(ids) and time.monotonic() < deadline:
        for pid, state in stack.states(ids).items():
            if state == "awaiting_secrets" and pid not in tokens:
                token = f"{random.randrange(10**9, 10**10)}:AA{uuid.uuid4().hex}"
                stack.cli("secrets", "set", pid, "TELEGRAM_BOT_TOKEN", stdin=token)
                tokens.add(pid)
            if state in SETTLED and pid not in settled:
                settled[pid] = time.monotonic() - started
        time.sleep(0.5)
    final = stack.states(ids)
    failed = [pid for pid in ids if final.get(pid) != "active"]
    if failed:
        print(f"  not live: {len(failed)} of {len(ids)} ({sorted(set(final.values()))})")
    return sorted(settled.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=20, help="projects at once (default 20)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for them")
    parser.add_argument(
        "--up-only", action="store_true", help="only start the stack, measure it ready, stop it"
    )
    args = parser.parse_args()

    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    state_dir = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    stack = start_stack(state_dir)
    if args.up_only:
        measure_ready(stack)
        return
    peak = MemoryPeak(stack.process.pid)
    peak.start()
    ids: list[str] = []
    try:
        print(f"orchestrator up: ready line after {stack.ready_seconds:.1f} s")
        for line in stack.table:
            if "/readyz" in line or "(HTTP API)" in line:
                print("  " + " ".join(line.split()))

        cli = [sys.executable, "-m", "producers.cli", "--state-dir", str(state_dir)]
        print(f"orchestrator --help: {median_wall([*cli, '--help']):.2f} s (median of 5)")

        tag = uuid.uuid4().hex[:4]
        by_process = cpu_by_process(stack.process.pid)
        one_cpu_before = busy_cpu_seconds()
        started = time.monotonic()
        one = project_id(request(stack, KINDS[0].format(name=f"bench-one-{tag}")))
        ids.append(one)
        (single,) = wait_all(stack, [one], started, args.timeout) or [float("nan")]
        one_cpu = busy_cpu_seconds() - one_cpu_before
        print(
            f"one project (HTTP API), request to live: {single:.1f} s, machine CPU {one_cpu:.1f} s"
        )
        print(f"  CPU s by process: {cpu_table(by_process, cpu_by_process(stack.process.pid))}")
        busy = median_wall([*cli, "status", one])
        waited = wait_until_quiet()
        quiet = median_wall([*cli, "status", one])
        print(
            f"orchestrator status: {quiet:.2f} s on a quiet machine (after {waited:.0f} s for "
            f"the stack to settle), {busy:.2f} s right after the project went live (median of 5)"
        )

        n = args.projects
        cpu_before = busy_cpu_seconds()
        by_process = cpu_by_process(stack.process.pid)
        started = time.monotonic()
        batch = [
            request(stack, KINDS[i % len(KINDS)].format(name=f"bench-{i:02d}-{tag}"))
            for i in range(n)
        ]
        batch_ids = [project_id(process) for process in batch]
        submitted = time.monotonic() - started
        ids += batch_ids
        times = wait_all(stack, batch_ids, started, args.timeout)
        cpu = busy_cpu_seconds() - cpu_before
        print(f"{n} at once: submitted in {submitted:.1f} s")
        if times:
            print(f"  first live after {times[0]:.1f} s, all settled after {times[-1]:.1f} s")
            print(f"  ratio to one project: {times[-1] / single:.1f}x (goal: at most 3x)")
        print(f"  machine CPU over the batch: {cpu:.0f} s, {cpu / n:.1f} s per project")
        cores = os.cpu_count() or 1
        print(
            f"  CPU floor: {n} projects x {cpu / n:.1f} CPU s on {cores} cores need at least "
            f"{cpu / cores:.0f} s, {cpu / cores / single:.1f}x one project, however they are "
            "scheduled"
        )
        print(f"  CPU s by process: {cpu_table(by_process, cpu_by_process(stack.process.pid))}")
    finally:
        peak.stopped.set()
        peak.join()
        print(f"stack peak memory: RSS {peak.rss / 1024**2:.2f} GiB, "
              f"PSS {peak.pss / 1024**2:.2f} GiB (goal: at most 1.5 GB)")  # fmt: skip
        for pid in ids:
            stack.cli("archive", pid, "--reason", "benchmark done")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and any(
            state != "archived" for state in stack.states(ids).values()
        ):
            time.sleep(1)
        stack.process.send_signal(signal.SIGINT)
        stack.process.wait(timeout=120)
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
