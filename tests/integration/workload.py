"""A test consumer on the real runtime, run in-process or as its own process (a "replica").

Its effect is one row in `effects` per handled event, written in the step's transaction, so
"exactly once in effect" is a SQL count. It emits one notification per event, so the outbox
path is exercised too. Run as a script: `python tests/integration/workload.py --replica a`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contracts import events as ev
from contracts.topology import INTENTS, ConsumerSpec
from infra.bus.runtime import ConsumerApp, PermanentError, StepContext
from infra.settings import Settings

EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS effects ("
    " id bigserial PRIMARY KEY, event_id uuid NOT NULL, replica text NOT NULL,"
    " description text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
)


def worker_spec(ack_wait: float = 30.0, max_deliver: int = 5) -> ConsumerSpec:
    return ConsumerSpec(
        "test-worker",
        "test-worker",
        INTENTS,
        (ev.ProjectRequested.TYPE,),
        "integration-test workload",
        ack_wait_seconds=ack_wait,
        max_deliver=max_deliver,
    )


def build_workload(
    settings: Settings,
    replica: str,
    *,
    ack_wait: float = 30.0,
    max_deliver: int = 5,
    fail_poison: bool = False,
    started_marker: Path | None = None,
) -> ConsumerApp:
    app = ConsumerApp("test-worker", settings=settings, specs=[worker_spec(ack_wait, max_deliver)])

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> ev.Event:
        if started_marker is not None:
            started_marker.write_text(str(event.event_id))
        if event.description.startswith("slow"):
            await asyncio.sleep(float(event.description.split()[1]))
        if fail_poison and "poison" in event.description:
            if "permanent" in event.description:
                raise PermanentError("this description is refused for good")
            raise RuntimeError("the handler cannot cope with poison")
        await ctx.session.execute(
            text("INSERT INTO effects (event_id, replica, description) VALUES (:e, :r, :d)"),
            {"e": event.event_id, "r": replica, "d": event.description},
        )
        return event.derive(
            ev.NotificationRequested,
            actor="test-worker",
            user_id=event.user_id,
            kind=ev.NotificationKind.INFO,
            text=f"handled {event.description}",
        )

    return app


async def _main(args: argparse.Namespace) -> int:
    settings = Settings(
        nats={"url": os.environ["ORCH_NATS__URL"]},
        database={"url": os.environ["ORCH_DATABASE__URL"], "pool_size": 10},
        consumer={"batch_size": args.batch_size, "backoff_seconds": [0.2]},
    )
    app = build_workload(
        settings,
        args.replica,
        ack_wait=args.ack_wait,
        max_deliver=args.max_deliver,
        fail_poison=args.fail_poison,
        started_marker=Path(args.started_marker) if args.started_marker else None,
    )
    if args.crash_on_publish:

        async def crash_instead_of_publishing() -> None:
            assert app.publisher is not None

            async def crash(*_: object) -> None:
                os._exit(3)  # the process dies between the commit and the publish

            app.publisher.publish_raw = crash  # type: ignore[method-assign]

        app.on_startup.append(crash_instead_of_publishing)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await app.serve(stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--replica", required=True)
    parser.add_argument("--ack-wait", type=float, default=30.0)
    parser.add_argument("--max-deliver", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--fail-poison", action="store_true")
    parser.add_argument("--crash-on-publish", action="store_true")
    parser.add_argument("--started-marker")
    raise SystemExit(asyncio.run(_main(parser.parse_args())))
