"""Let the application close a socket with the standard codes an endpoint may send.

Autobahn, which Daphne speaks WebSocket with, takes only 1000 and 3000-4999
from an application: any other code raises inside Daphne, which then closes
the socket with 1011 instead. RFC 6455 (section 7.4.1) defines 1003 (data
that cannot be accepted), 1008 (policy violation), 1009 (too big) and 1013
(try again later) for endpoints to send, and the protocol uses them. Daphne
itself already sends 1007 and 1009 from the same library; this lets the
application send those codes too, as a close frame, through autobahn's own
sendCloseFrame. Other codes go through Daphne unchanged.

Installed from the ASGI module, only in a process where Daphne serves it.
"""

import sys

# Codes RFC 6455 lets an endpoint put in a close frame, besides 1000.
STANDARD_CLOSE_CODES = frozenset({1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def install() -> bool:
    """Patch Daphne's WebSocket protocol once, if Daphne is what serves this process."""
    ws_protocol = sys.modules.get("daphne.ws_protocol")
    if ws_protocol is None:
        return False
    protocol_class = ws_protocol.WebSocketProtocol
    if getattr(protocol_class, "presence_close_codes", False):
        return True
    daphne_server_close = protocol_class.serverClose

    def serverClose(self, code=None):
        if code in STANDARD_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            daphne_server_close(self, code=code)

    protocol_class.serverClose = serverClose
    protocol_class.presence_close_codes = True
    return True
