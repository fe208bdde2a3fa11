"""What the lag exporter reads: JetStream state per durable and stream, and the servers' monitoring.

Every series is replaced on each pass, never left at its last value: a durable that is gone
reads `orchestrator_jetstream_consumer_present 0`, and when JetStream or a server's monitoring
port cannot be read `orchestrator_jetstream_up` or `orchestrator_nats_up` drop to 0, so a blind
exporter is an alert of its own rather than a flat, reassuring line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Gauge

from contracts.topology import CONSUMERS, STREAMS, ConsumerSpec, StreamSpec
from infra.metrics import JetStreamInfoSource, PeriodicCollector

log = structlog.stdlib.get_logger(__name__)

_DURABLE = ("stream", "consumer")


class ExporterMetrics:
    """The exporter's series, in a registry of their own (tests build as many as they need)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        self.jetstream_up = gauge(
            "orchestrator_jetstream_up", "1 if the last read of JetStream's state succeeded"
        )
        self.consumer_present = gauge(
            "orchestrator_jetstream_consumer_present",
            "1 if the durable consumer exists on the server, 0 if it is missing",
            _DURABLE,
        )
        self.consumer_pending = gauge(
            "orchestrator_jetstream_consumer_pending",
            "Messages in the stream not yet delivered to the durable (its lag)",
            _DURABLE,
        )
        self.consumer_ack_pending = gauge(
            "orchestrator_jetstream_consumer_ack_pending",
            "Messages delivered to the durable and not yet acknowledged",
            _DURABLE,
        )
        self.consumer_redelivered = gauge(
            "orchestrator_jetstream_consumer_redelivered",
            "Messages of the durable delivered more than once and still unacknowledged",
            _DURABLE,
        )
        self.consumer_delivered_seq = gauge(
            "orchestrator_jetstream_consumer_delivered_stream_seq",
            "Last stream sequence delivered to the durable (its rate is the durable's throughput)",
            _DURABLE,
        )
        self.stream_messages = gauge(
            "orchestrator_jetstream_stream_messages", "Messages stored in the stream", ("stream",)
        )
        self.stream_bytes = gauge(
            "orchestrator_jetstream_stream_bytes", "Bytes stored in the stream", ("stream",)
        )
        self.nats_up = gauge(
            "orchestrator_nats_up", "1 if the server's monitoring endpoint answered", ("server",)
        )
        self.nats_connections = gauge(
            "orchestrator_nats_connections", "Client connections open on the server", ("server",)
        )
        self.nats_slow_consumers = gauge(
            "orchestrator_nats_slow_consumers",
            "Clients the server cut off for not reading fast enough, since it started "
            "(cumulative: alert on its increase)",
            ("server",),
        )
        self.nats_storage_bytes = gauge(
            "orchestrator_nats_jetstream_storage_bytes",
            "JetStream file storage used on the server",
            ("server",),
        )
        self.nats_storage_max_bytes = gauge(
            "orchestrator_nats_jetstream_storage_max_bytes",
            "JetStream file storage the server may use",
            ("server",),
        )
        self.nats_memory_bytes = gauge(
            "orchestrator_nats_jetstream_memory_bytes",
            "JetStream memory storage used on the server",
            ("server",),
        )


class JetStreamLagCollector(PeriodicCollector):
    """Lag, in-flight and redelivered counts of every durable, and the size of every stream."""

    def __init__(
        self,
        jsm: JetStreamInfoSource,
        metrics: ExporterMetrics,
        *,
        consumers: Sequence[ConsumerSpec] = CONSUMERS,
        streams: Sequence[StreamSpec] = STREAMS,
        interval: float = 15.0,
    ) -> None:
        super().__init__("jetstream-lag", self.collect_once, interval)
        self._jsm = jsm
        self._metrics = metrics
        self._consumers = tuple(consumers)
        self._streams = tuple(streams)

    async def collect_once(self) -> None:
        try:
            await self._read()
        except Exception:
            self._metrics.jetstream_up.set(0)
            raise
        self._metrics.jetstream_up.set(1)

    async def _read(self) -> None:
        m = self._metrics
        for spec in self._consumers:
            labels = (spec.stream.name, spec.durable)
            try:
                info = await self._jsm.consumer_info(spec.stream.name, spec.durable)
            except NotFoundError:
                m.consumer_present.labels(*labels).set(0)
                continue
            m.consumer_present.labels(*labels).set(1)
            m.consumer_pending.labels(*labels).set(info.num_pending or 0)
            m.consumer_ack_pending.labels(*labels).set(info.num_ack_pending or 0)
            m.consumer_redelivered.labels(*labels).set(info.num_redelivered or 0)
            delivered = info.delivered.stream_seq if info.delivered is not None else 0
            m.consumer_delivered_seq.labels(*labels).set(delivered or 0)
        for stream in self._streams:
            try:
                state = (await self._jsm.stream_info(stream.name)).state
            except NotFoundError:
                log.warning("lag_exporter.stream_missing", stream=stream.name)
                continue
            m.stream_messages.labels(stream.name).set(state.messages)
            m.stream_bytes.labels(stream.name).set(state.bytes)


class NatsServerCollector(PeriodicCollector):
    """Connections, slow consumers and JetStream storage from each server's `/varz` and `/jsz`.

    The monitoring port needs no credentials and is never published outside the cluster; each
    URL is one server (a cluster lists all three). Series are labelled by the URL's host:port,
    which stays the same whether or not the server answers.
    """

    def __init__(
        self,
        monitor_urls: Sequence[str],
        metrics: ExporterMetrics,
        *,
        interval: float = 15.0,
        timeout: float = 5.0,
    ) -> None:
        super().__init__("nats-server", self.collect_once, interval)
        self._urls = tuple(url.rstrip("/") for url in monitor_urls)
        self._metrics = metrics
        self._timeout = timeout

    async def collect_once(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            for url in self._urls:
                await self._read_server(client, url)

    async def _read_server(self, client: httpx.AsyncClient, url: str) -> None:
        m = self._metrics
        server = urlsplit(url).netloc or url
        try:
            varz = await _get_json(client, f"{url}/varz")
            jsz = await _get_json(client, f"{url}/jsz")
        except (httpx.HTTPError, ValueError) as error:
            m.nats_up.labels(server).set(0)
            log.warning("lag_exporter.monitor_unreachable", url=url, error=str(error))
            return
        m.nats_up.labels(server).set(1)
        m.nats_connections.labels(server).set(varz.get("connections", 0))
        m.nats_slow_consumers.labels(server).set(varz.get("slow_consumers", 0))
        m.nats_storage_bytes.labels(server).set(jsz.get("storage", 0))
        m.nats_memory_bytes.labels(server).set(jsz.get("memory", 0))
        config: Mapping[str, Any] = jsz.get("config") or {}
        m.nats_storage_max_bytes.labels(server).set(config.get("max_storage", 0))


async def _get_json(client: httpx.AsyncClient, url: str) -> Mapping[str, Any]:
    response = await client.get(url)
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"{url} answered {type(body).__name__}, expected a JSON object")
    return body
