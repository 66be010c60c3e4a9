"""Prometheus metrics of chat, per process (scrape every process)."""

from prometheus_client import Counter

MESSAGES_STORED = Counter("chat_messages_stored_total", "Chat messages stored.")
MESSAGES_BROADCAST = Counter("chat_messages_broadcast_total", "Chat messages handed to the channel layer for a room.")
