"""The distributed backend's engine side on NATS JetStream.

Telemetry log, events log, the engine's cursors, call states and timers, and
partition leases, each behind the protocols of ``callstream.store.interfaces``.
No other package talks to NATS. The design and its crash argument are in
docs/decisions (nats-jetstream-engine-store).
"""
