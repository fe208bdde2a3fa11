"""The stack's zygote: imports what every stack process shares once, then forks each of them.

Why (issue 12): each stack process spent 2 to 4 s of CPU importing the same libraries
(sqlalchemy, pydantic, nats, structlog, prometheus_client, our contracts and bus runtime) and
kept its own private copy of them. This process imports them once, freezes them out of the
garbage collector's reach (`gc.freeze`, so a child's collections do not write to, and so copy,
the shared pages) and forks a child per request, the way Android's zygote and CPython's
multiprocessing forkserver do. A child then runs its module exactly as `python -m module`
would, with the environment, working directory, session and log file it would have had.

Run by the supervisor as `python -m infra.stack.zygote <control fd> <module>...`. The control
channel is a Unix socket carrying one JSON object per line. Requests:
`{"id", "name", "module", "env", "cwd", "log"}`; answers: `{"ready", "threads", "failed"}`
once after preloading, `{"id", "pid"}` or `{"id", "error"}` per request, and
`{"exited": pid, "code": code}` whenever a child ends (the code as `Popen.returncode` gives
it: negative for a signal). The zygote exits when the supervisor closes the channel; its
children get SIGTERM from the kernel then (PDEATHSIG), as they would if the supervisor died.

Forking is safe only from a single-threaded process whose preloaded modules hold no socket,
thread, event loop or open file: the zygote refuses to fork if a thread appeared, and every
descriptor but the child's stdio is closed in the child. What `os.fork` itself resets is left
to it (`random` reseeds in the child through its at-fork hook; `uuid4` and `secrets` read
the kernel's randomness). Logging is configured by each child's own `main`, never here.
Two things differ from a fresh interpreter: the hash seed is the zygote's (shared by every
child), and `/proc/<pid>/environ` and `cmdline` show the zygote's (Python's `os.environ`, and
so every program the child runs, see exactly the requested environment).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_READ_SIZE = 65536


@dataclass(frozen=True)
class Launch:
    """What a freshly forked child runs once it is out of the zygote's loop."""

    module: str

    def run(self) -> None:
        """Run the module as `__main__`; its SystemExit or exception ends the interpreter."""
        runpy.run_module(self.module, run_name="__main__", alter_sys=True)


def preload(modules: Sequence[str]) -> list[str]:
    """Import `modules`; return those that failed (each child then fails in its own import)."""
    failed = []
    for module in modules:
        try:
            importlib.import_module(module)
        # A child that needs the module fails in its own import, with the real traceback.
        except Exception:
            traceback.print_exc()
            failed.append(module)
    # Objects that exist now live as long as the zygote: keep the collector off their pages.
    gc.collect()
    gc.freeze()
    return failed


class _Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.pid = os.getpid()
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Every forked child keeps the zygote's command line; `ps -o comm` tells them apart.
        self.set_name("zygote")

    def set_name(self, name: str) -> None:
        self.libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)

    def send(self, message: Mapping[str, object]) -> None:
        self.control.sendall(json.dumps(message).encode() + b"\n")

    def serve(self) -> Launch | None:
        """Answer requests until the supervisor hangs up (None), or return in a new child."""
        # SIGCHLD wakes the loop through the wakeup fd; a Python handler is what arms it.
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ)
        selector.register(self.wake_read, selectors.EVENT_READ)
        pending = b""
        while True:
            for key, _ in selector.select():
                if key.fileobj is self.wake_read:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_read, _READ_SIZE)
                    self.reap()
                    continue
                data = self.control.recv(_READ_SIZE)
                if not data:
                    selector.close()
                    return None
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    launch = self.handle(json.loads(line))
                    if launch is not None:
                        selector.close()
                        return launch

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    def handle(self, request: dict[str, object]) -> Launch | None:
        request_id = request["id"]
        threads = threading.active_count()
        if threads != 1:
            self.send({"id": request_id, "error": f"the zygote runs {threads} threads"})
            return None
        try:
            log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as error:
            self.send({"id": request_id, "error": f"cannot open the log: {error}"})
            return None
        pid = os.fork()
        if pid == 0:
            try:
                self.become_child(request, log)
            # Whatever went wrong, the child must never return into the zygote's loop.
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            return Launch(str(request["module"]))
        os.close(log)
        self.send({"id": request_id, "pid": pid})
        return None

    def become_child(self, request: dict[str, object], log: int) -> None:
        """Everything `python -m module` started by the supervisor would have had."""
        os.setsid()
        if self.libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != self.pid:
            os._exit(1)  # the zygote died between fork and prctl: nobody would signal us
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.control.close()
        os.close(self.wake_read)
        os.close(self.wake_write)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update({str(name): str(value) for name, value in env.items()})
        if request.get("cwd"):
            os.chdir(str(request["cwd"]))
        # As `python -m module` would have them: no zygote arguments, the working directory
        # first on the path (`runpy` sets `argv[0]` to the module's file).
        sys.argv[:] = sys.argv[:1]
        sys.path[0] = os.getcwd()
        self.set_name(str(request["name"]))


def main(argv: Sequence[str]) -> Launch | None:
    """Preload, report ready, then serve; a forked child returns the module it must run."""
    control = socket.socket(fileno=int(argv[0]))
    failed = preload(argv[1:])
    zygote = _Zygote(control)
    zygote.send(
        {"ready": True, "threads": threading.active_count(), "failed": failed, "pid": zygote.pid}
    )
    return zygote.serve()


if __name__ == "__main__":
    _launch = main(sys.argv[1:])
    if _launch is not None:
        _launch.run()
