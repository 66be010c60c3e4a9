"""Let the application close a socket with the standard codes an endpoint may send.

Autobahn, which Daphne speaks WebSocket with, takes only 1000 and 3000-4999
from an application: any other code raises inside Daphne, which then closes
the socket with 1011 instead. RFC 6455 (section 7.4.1) defines 1003 (data
that cannot be accepted), 1008 (policy violation), 1009 (too big) and 1013
(try again later) for endpoints to send, and the protocol uses them. Daphne
itself already sends 1007 and 1009 from the same library; this lets the
application send those codes too, as a close frame, through autobahn's own
sendCloseFrame. Other codes go through Daphne unchanged.

It also keeps `--websocket-max-message-size` for what clients send only.
Autobahn checks the same limit on what the server sends, so a snapshot of
many users or a history of long messages over 64 KiB would fail the socket
with 1011; the server's own frames are bounded by the protocol instead.

And it writes a frame to the socket at once when nothing is waiting to be
written before it, as asyncio's own transports do. Twisted's transport only
buffers a write and asks the reactor to watch the socket for writability; on
asyncio that is an `add_writer`, a loop turn and a `remove_writer` (two
`epoll_ctl` calls) for every frame, which was a quarter of the server's time
when a broadcast went out to a room of 1,000 (docs/benchmarks.md). What the
kernel does not take, and everything while something is buffered, still goes
through the transport, so frames keep their order and a slow reader's backlog
is Twisted's as before.

Installed from the ASGI module, only in a process where Daphne serves it.
"""

import sys

# Codes RFC 6455 lets an endpoint put in a close frame, besides 1000.
STANDARD_CLOSE_CODES = frozenset({1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

# Twisted's plain TCP server transport, set by install() (Twisted is loaded only where Daphne serves).
TcpServer: type | None = None


def install() -> bool:
    """Patch Daphne's WebSocket protocol once, if Daphne is what serves this process."""
    ws_protocol = sys.modules.get("daphne.ws_protocol")
    if ws_protocol is None:
        return False
    protocol_class = ws_protocol.WebSocketProtocol
    global TcpServer
    from twisted.internet.tcp import Server as TcpServer

    if getattr(protocol_class, "presence_close_codes", False):
        return True
    daphne_server_close = protocol_class.serverClose

    def serverClose(self, code=None):
        if code in STANDARD_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            daphne_server_close(self, code=code)

    daphne_send_message = protocol_class.sendMessage

    def sendMessage(self, payload, isBinary=False, fragmentSize=None, sync=False, doNotCompress=False):
        # One reactor thread: lifting the limit for the duration of the call
        # cannot let an incoming frame through.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            return daphne_send_message(self, payload, isBinary, fragmentSize, sync, doNotCompress)
        finally:
            self.maxMessagePayloadSize = limit

    autobahn_send_data = protocol_class.sendData

    def sendData(self, data, sync=False, chopsize=None):
        if sync or chopsize or self.send_queue or not write_now(self.transport, data):
            autobahn_send_data(self, data, sync, chopsize)

    protocol_class.serverClose = serverClose
    protocol_class.sendMessage = sendMessage
    protocol_class.sendData = sendData
    protocol_class.presence_close_codes = True
    return True


def write_now(transport, data: bytes) -> bool:
    """Send data on a plain TCP transport with nothing buffered; False if the transport must queue it instead.

    The part the kernel does not take is handed to the transport, behind
    nothing, so the order of frames holds; a socket error is left for the
    transport to meet on its next write, where Twisted closes the connection.
    """
    if (
        type(transport) is not TcpServer  # TLS and test transports buffer on their own
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
        or getattr(transport, "_aborting", False)
        or transport.dataBuffer
        or transport._tempDataBuffer
    ):
        return False
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        return False
    if sent < len(data):
        transport.write(data[sent:])
    return True
