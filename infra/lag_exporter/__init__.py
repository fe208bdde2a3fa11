"""The lag exporter: JetStream lag of every durable and the NATS servers' own state, on /metrics.

Why a process of its own: each consumer used to export the lag of its own durables only, so
when a consumer was down its lag series went stale and the lag panel and alert went silent
exactly when lag grew. This process reads every durable of `contracts.topology` with a NATS
user that may read consumer and stream info and nothing else, and it stays up whatever the
consumers do. Run it as `python -m infra.lag_exporter` (the local stack, compose and the Helm
chart each run one).
"""
