"""naq's ``naq.connection`` module path: raw nats-py connections on the calling loop."""

from .client.naq_names import close_nats_connection, get_jetstream_context, get_nats_connection  # noqa: F401
