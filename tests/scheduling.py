"""How `make test` shares test files between its pytest-xdist workers.

xdist's `loadfile` hands each worker the next file in collection order (heaviest folders
first, `tests/conftest.py`). With every worker in `tests/e2e` at once the two cores were
saturated by stacks, and then every worker was in `tests/integration` at once, where tests
mostly wait (a NATS restart, an ack deadline, a container): a measured run spent three
minutes using about 1.2 of the 2 cores.

`StackAwareScheduling` keeps `loadfile`'s units (a file stays on one worker, so its
module-scoped fixtures are set up once) and its order, with one rule: at most
`STACK_WORKERS` workers run end-to-end files at a time. A worker already in `tests/e2e` keeps
taking them (its package-scoped `offline_stack` boots once); the others take the next file
that is not, so the waiting tests run beside the stacks. Once only e2e files are left, every
worker takes them.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadFileScheduling

#: Workers that may run end-to-end files at once. Each boots its own stack; an e2e test uses
#: about half a core on average and the concurrency test over one.
STACK_WORKERS = 2
_STACK_FOLDER = "tests/e2e/"


def needs_stack(scope: str) -> bool:
    return scope.startswith(_STACK_FOLDER)


class StackAwareScheduling(LoadFileScheduling):  # type: ignore[misc] -- xdist has no types
    def _assign_work_unit(self, node: Any) -> None:
        others_in_e2e = sum(
            1
            for other, work in self.assigned_work.items()
            if other is not node
            and any(needs_stack(scope) and not all(done.values()) for scope, done in work.items())
        )
        if others_in_e2e >= STACK_WORKERS:
            lighter = next((scope for scope in self.workqueue if not needs_stack(scope)), None)
            if lighter is not None:
                self.workqueue.move_to_end(lighter, last=False)
        super()._assign_work_unit(node)
