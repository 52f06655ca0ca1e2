"""Client layer: a background event-loop thread that owns the NATS connections,
sync and async forms of every call, and job futures."""
