"""A bare ASGI app for realtime/tests/test_daphne_compat.py, patched as presence_site/asgi.py patches the site.

The path says what the app does once it has accepted the socket:

    /close/<code>              close with that code
    /send/<length>             send one text frame of that many characters, then echo
    /burst/<frames>/<token>    send that many numbered frames of varied sizes at once, then echo
    /burst-sent/<token>        when that burst has gone to Daphne, send what write_now did with it, and close
    /echo                      echo

Echo answers every frame with its length. Daphne serves it with DAPHNE_COMPAT=patched
in the environment, or with DAPHNE_COMPAT=upstream to show what Daphne, autobahn and
Twisted do on their own. Imported without either (as the tests import burst_frame),
it patches nothing.
"""

import asyncio
import collections
import json
import os

from realtime import daphne_compat

# What write_now did with the frames of the latest burst.
write_counts: collections.Counter[str] = collections.Counter()
bursts: dict[str, asyncio.Future] = {}


def burst_frame(index: int) -> str:
    """Frame number index of a burst: its number, then filler of a size that varies from frame to frame."""
    return f"{index:05d}:" + "abcdefghij"[index % 10] * (index * 7919 % 7000)


def counting_write_now(transport, data: bytes) -> bool:
    """realtime.daphne_compat.write_now, counting what it did: sent the frame, sent part of it, or left it."""
    sent = fast_write_now(transport, data)
    if not sent:
        write_counts["queued"] += 1
        write_counts[f"queued on {type(transport).__qualname__}"] += 1
    # The fast path only runs with Twisted's buffer empty: anything in it now is the part the kernel refused.
    elif transport._tempDataBuffer:
        write_counts["partial"] += 1
    else:
        write_counts["direct"] += 1
    return sent


def burst_future(token: str) -> asyncio.Future:
    return bursts.setdefault(token, asyncio.get_running_loop().create_future())


async def application(scope, receive, send) -> None:
    if scope["type"] != "websocket" or (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    action, *arguments = scope["path"].strip("/").split("/")
    if action == "close":
        await send({"type": "websocket.close", "code": int(arguments[0])})
        return
    if action == "burst-sent":
        await send({"type": "websocket.send", "text": json.dumps(await burst_future(arguments[0]))})
        await send({"type": "websocket.close", "code": 1000})
        return
    if action == "send":
        await send({"type": "websocket.send", "text": "x" * int(arguments[0])})
    elif action == "burst":
        write_counts.clear()
        # Daphne's send never awaits: the whole burst reaches Twisted within one turn of the loop.
        for index in range(int(arguments[0])):
            await send({"type": "websocket.send", "text": burst_frame(index)})
        burst_future(arguments[1]).set_result(dict(write_counts))
    while (message := await receive())["type"] == "websocket.receive":
        received = message.get("text") or message.get("bytes") or ""
        await send({"type": "websocket.send", "text": str(len(received))})


if os.environ.get("DAPHNE_COMPAT") == "patched":
    # As presence_site/asgi.py does; Daphne has imported its protocol before it imports the app.
    daphne_compat.install()
    fast_write_now = daphne_compat.write_now
    daphne_compat.write_now = counting_write_now
