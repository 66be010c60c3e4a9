"""The floor for Python: a broadcast server written with the `websockets` library alone.

One process, an in-memory set of connections, `broadcast()` of every text frame
to every connection (the sender included). No authentication, no database, no
channel layer: what is left is the cost of WebSocket framing on asyncio.
Run: python bench/floor.py PORT
"""

import asyncio
import signal
import sys

from websockets.asyncio.server import broadcast, serve

CONNECTIONS: set = set()


async def handler(websocket) -> None:
    CONNECTIONS.add(websocket)
    try:
        async for message in websocket:
            broadcast(CONNECTIONS, message)
    finally:
        CONNECTIONS.discard(websocket)


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, max_size=65536, ping_interval=20, ping_timeout=30, backlog=4096):
        await stop


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
