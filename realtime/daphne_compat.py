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

And on SIGTERM it drains before it stops: Twisted's own handler stops the
reactor at once, and Daphne then cancels every application, so each socket
dropped with 1006 and its user flickered offline for everyone. Here the
process stops listening (the load balancer sends new handshakes to the other
processes), closes its sockets with 1012 over SHUTDOWN_DRAIN seconds
(realtime.runtime.Runtime.shutdown), and then stops the reactor, so Daphne
exits 0. A second SIGTERM stops at once.

And it formats autobahn's per-connection debug line only when it is logged:
autobahn pretty-prints every connection's settings for a debug message as
the connection is made, whatever the log level, and that was a tenth of the
server's time in a storm of handshakes.

Installed from the ASGI module, only in a process where Daphne serves it.
"""

import asyncio
import logging
import pprint
import signal
import sys

# Codes RFC 6455 lets an endpoint put in a close frame, besides 1000.
STANDARD_CLOSE_CODES = frozenset({1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

# Twisted's plain TCP server transport, set by install() (Twisted is loaded only where Daphne serves).
TcpServer: type | None = None

logger = logging.getLogger(__name__)


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
    import autobahn.websocket.protocol as autobahn_protocol

    autobahn_protocol.pformat = FormattedWhenLogged
    # The module's one pformat() whose result must be a str there and then.
    autobahn_protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)
    from twisted.internet import reactor

    # After startup: Twisted installs its own SIGTERM handler while starting, and ours must replace it.
    reactor.callWhenRunning(drain_on_sigterm)
    return True


class FormattedWhenLogged:
    """pprint.pformat(obj), computed when a log line formats it (autobahn's debug lines are not, by default)."""

    __slots__ = ("obj",)

    def __init__(self, obj) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return pprint.pformat(self.obj)

    __format__ = lambda self, spec: format(str(self), spec)  # noqa: E731 - "{attrs}" formats through __format__


def drain_on_sigterm() -> None:
    """Called once the reactor runs: SIGTERM drains the process's sockets, then stops the reactor."""
    from twisted.internet import reactor

    draining = False

    def on_sigterm(signum, frame) -> None:
        nonlocal draining
        if draining:
            reactor.callFromThread(reactor.stop)
            return
        draining = True
        reactor.callFromThread(start_drain)

    signal.signal(signal.SIGTERM, on_sigterm)


def start_drain() -> None:
    """Drain on the reactor's event loop; stop the reactor when it is done."""
    from django.conf import settings
    from twisted.internet import reactor

    from realtime.runtime import runtime

    async def drain() -> None:
        try:
            await runtime().shutdown(drain=settings.SHUTDOWN_DRAIN, stop_listening=stop_listening)
        except Exception:
            logger.exception("the drain failed; stopping all the same")
        finally:
            reactor.stop()

    asyncio.get_event_loop().create_task(drain())


def stop_listening() -> None:
    """Close every listening port of this process, so that new connections go to the other processes."""
    from twisted.internet import reactor, tcp

    for reader in list(reactor.getReaders()):
        if isinstance(reader, tcp.Port):
            reader.stopListening()


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
