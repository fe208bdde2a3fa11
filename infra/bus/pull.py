"""One pull loop's requests for messages, so that the next one can be sent before it is needed.

nats-py's `fetch` sends its pull request when it is called, so a message that arrived while
the loop handled the one before waited a round trip to the server after that one was done.
Here the runtime asks for the next messages as soon as a step has committed
(`ConsumerApp._decide`), while its event is published and its message acknowledged; the
request is answered meanwhile and the next step starts at once.

Each request is JetStream's pull with `no_wait` and `expires`: it waits up to `expires` for
a first message, then delivers what is waiting (up to `batch`) and ends at once with a status
(tried on nats-server 2.15; without `no_wait` a request stays open for the rest of its batch
and holds what arrives later). One request at a time is outstanding, so a loop holds at most
one batch it has not started on. A message delivered early is held only while the step
before it is published and acknowledged; should that take a heartbeat interval (NATS
struggling to store), the held messages are sent `in_progress` so JetStream does not hand
them to another replica, and a loop that stops hands them back at once (`nak`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

#: How much longer than the request's own expiry the client waits for its end, so that the
#: server's "request timeout" arrives first unless the request was lost (a reconnect).
_EXPIRY_MARGIN = 1.0


class PullFailed(Exception):
    """JetStream refused or dropped a pull request (the durable is gone, a leader changed)."""


class PullRequests:
    """A pull loop's requests on one durable: at most one outstanding, sent early on demand."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        durable: str,
        *,
        batch: int,
        expires: float,
        heartbeat: float,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._batch = batch
        self._expires = expires
        self._heartbeat = heartbeat
        self._subscription: Subscription | None = None
        #: Messages delivered and not yet taken by `fetch`.
        self._arrived: deque[Msg] = deque()
        #: Messages the outstanding request may still deliver (0: none is outstanding).
        self._owed = 0
        #: Why the last request ended without its batch ("404 No Messages", ...).
        self._ended: str | None = None
        self._changed = asyncio.Event()
        self._keepalive: asyncio.TimerHandle | None = None
        self._beat: asyncio.Future[None] | None = None

    async def open(self) -> None:
        self._subscription = await self._nc.subscribe(self._inbox, cb=self._delivered)

    async def close(self) -> None:
        """Stop receiving and hand back what was delivered but not taken (redelivered at once)."""
        self._stop_keepalive()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        held, self._arrived = list(self._arrived), deque()
        await asyncio.gather(*(msg.nak() for msg in held), return_exceptions=True)

    async def ask(self) -> None:
        """Send the next request now, unless one is outstanding or messages are waiting."""
        if self._owed or self._arrived:
            return
        request = {
            "batch": self._batch,
            "expires": int(self._expires * 1e9),
            "no_wait": True,
        }
        self._owed, self._ended = self._batch, None
        self._changed.clear()
        try:
            await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)
        except BaseException:
            self._owed = 0
            raise

    async def fetch(self) -> list[Msg]:
        """What the outstanding request delivered (asking now if none is outstanding).

        Returns once the request has ended: at least one message and at most `batch`, or
        none when it expired empty. Raises `PullFailed` when JetStream answered with an error.
        """
        await self.ask()
        if self._owed:
            try:
                async with asyncio.timeout(self._expires + _EXPIRY_MARGIN):
                    while self._owed:
                        await self._changed.wait()
                        self._changed.clear()
            except TimeoutError:
                # No answer at all: the request was lost (a reconnect the client did not report);
                # the next call asks again.
                self._owed = 0
        self._stop_keepalive()
        taken = [self._arrived.popleft() for _ in range(min(self._batch, len(self._arrived)))]
        if self._arrived:
            # More came than a batch (a request thought lost was answered after all).
            self._start_keepalive()
        ended, self._ended = self._ended, None
        if not taken and ended is not None and not _normal_end(ended):
            raise PullFailed(ended)
        return taken

    def forget_outstanding(self) -> None:
        """The connection was lost and is back: the server no longer holds the request.

        `fetch` stops waiting for it and returns what came (maybe nothing), and the next call
        asks again. Should the request be answered after all, what it brings is kept (and sent
        `in_progress` until taken), as for any answer that comes after its expiry."""
        if self._owed:
            self._owed = 0
            self._changed.set()

    async def _delivered(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status == "100":  # an idle heartbeat: never asked for, nothing to do
            return
        if status is None:
            self._arrived.append(msg)
            self._owed = max(0, self._owed - 1)
            if self._keepalive is None:
                self._start_keepalive()
        else:
            assert msg.headers is not None
            self._ended = f"{status} {msg.headers.get('Description', '')}".strip()
            self._owed = 0
        self._changed.set()

    def _keep_held(self) -> None:
        """Messages still not taken a heartbeat interval after they came: keep them ours."""
        self._keepalive = None
        if not self._arrived:
            return
        self._beat = asyncio.ensure_future(_in_progress(list(self._arrived)))
        self._start_keepalive()

    def _start_keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_later(self._heartbeat, self._keep_held)

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None


def _normal_end(status: str) -> bool:
    """A request that found nothing: "no messages", "request timeout", or a conflict (a leader
    changed, the durable is being updated) that nats-py's `fetch` also treats as temporary."""
    return status.startswith(("404", "408", "409"))


async def _in_progress(msgs: Sequence[Msg]) -> None:
    await asyncio.gather(*(msg.in_progress() for msg in msgs), return_exceptions=True)
