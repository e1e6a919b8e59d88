"""The insights engine: per-call state turned from telemetry into insight events."""
