"""Prometheus metrics of chat, per process (scrape every process)."""

from prometheus_client import Counter

MESSAGES_STORED = Counter("chat_messages_stored_total", "Chat messages stored.")
MESSAGES_BROADCAST = Counter("chat_messages_broadcast_total", "Chat messages handed to the channel layer for a room.")
ACTIVITY_FLUSHES = Counter("chat_room_activity_flushes_total", "Coalesced room.activity rounds (one query each).")
ACTIVITY_FRAMES = Counter("chat_room_activity_frames_total", "room.activity frames handed to the channel layer.")
