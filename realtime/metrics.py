"""Prometheus metrics of the transport, per process (scrape every process).

The names keep their presence_ prefix: dashboards and alerts already use them.
"""

from prometheus_client import Counter, Gauge

OPEN_SOCKETS = Gauge("presence_open_sockets", "WebSockets open on this process.", ["endpoint"])
FRAMES_REFUSED = Counter("presence_frames_refused_total", "Client frames refused, by reason.", ["reason"])
SOCKETS_CLOSED = Counter(
    "presence_sockets_closed_total", "WebSockets closed, by endpoint and close code.", ["endpoint", "code"]
)
LAYER_ERRORS = Counter("presence_channel_layer_errors_total", "Channel-layer operations that failed.", ["operation"])
