"""One load-generator process: holds WebSocket clients and measures what they receive.

The bench runs several of these so that the generator is not the bottleneck. A
worker reads JSON commands on stdin, one per line ({"id", "cmd", ...}), runs
each as a task, and answers each with one JSON line on stdout ({"id", ...}).
Chat frames carry "<tag>|<seq>|<monotonic ns at send>" in their body; the
monotonic clock is shared by every process on the machine, so a receiver in
another process can compute the latency from send to receipt.
"""

import asyncio
import json
import os
import resource
import sys
import time
import uuid
from collections import defaultdict
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def failure_reason(error: Exception) -> str:
    """Why a handshake failed, in a few words: "HTTP 403", "timeout", "connection refused", ..."""
    if isinstance(error, InvalidStatus):
        return f"HTTP {error.response.status_code}"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionError) and str(error).startswith("closed during the handshake"):
        # Daphne resets a handshake its application did not accept within --websocket_connect_timeout (5 s).
        return f"{'reset' if isinstance(error.__cause__, ConnectionResetError) else 'closed'} during the handshake"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return type(error).__name__


class Client(asyncio.Protocol):
    """One WebSocket client on the `websockets` sans-I/O protocol.

    Frames are handled in data_received, with no task or queue per socket, so
    that thousands of sockets cost the generator as little as possible.
    """

    def __init__(
        self, worker: "Worker", url: str, headers: dict[str, str], group: str, watch: bool, listen: bool = True
    ) -> None:
        self.worker = worker
        self.protocol = ClientProtocol(parse_uri(url), max_size=2**22)
        self.headers = headers
        self.group = group
        self.watch = watch
        # False: text frames are not decoded (a crowd whose frames nobody reads costs the generator less).
        self.listen = listen
        self.sender = False
        self.closing = False
        self.gone = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiting: dict[str, asyncio.Future] = {}
        self.diffs: list[tuple[int, int]] = []  # (ns, online_count) of presence diffs
        self.snapshot_count: int | None = None
        self.fragments: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        request = self.protocol.connect()
        for name, value in self.headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self.flush()

    def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                if not self.listen:
                    continue
                if event.opcode is Opcode.TEXT or event.opcode is Opcode.CONT:
                    self.fragments.append(event.data)
                    if event.fin:
                        text = b"".join(self.fragments).decode()
                        self.fragments = []
                        self.worker.on_text(self, text, now)
            elif isinstance(event, Response) and not self.opened.done():
                if self.protocol.handshake_exc is not None:
                    self.opened.set_exception(self.protocol.handshake_exc)
                else:
                    self.opened.set_result(None)
        self.flush()
        if self.protocol.close_expected():
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            error = ConnectionError(f"closed during the handshake: {exc}")
            error.__cause__ = exc
            self.opened.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)
        self.gone = True
        if not self.closing and self.opened.done() and self.opened.exception() is None:
            self.worker.closed_unexpectedly += 1
            received = self.protocol.close_rcvd
            self.worker.close_codes[self.group][str(received.code if received else 1006)] += 1

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self.flush()

    async def close(self) -> None:
        self.closing = True
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self.protocol.send_close(1000)
            self.flush()
            await asyncio.wait_for(asyncio.shield(self.closed), 2)
        except Exception:
            pass
        self.transport.close()


class Worker:
    def __init__(self) -> None:
        self.clients: dict[str, list[Client]] = defaultdict(list)
        self.tag = ""
        self.latencies: list[int] = []
        self.received = 0
        self.first_ns = 0
        self.last_ns = 0
        self.per_seq: dict[str, int] = defaultdict(int)
        self.seq_waiters: dict[str, tuple[int, asyncio.Future]] = {}
        # room.activity frames: send-to-receipt times of the message each names, and how many per socket.
        self.activity_latencies: list[int] = []
        self.activity_frames: dict[int, int] = defaultdict(int)
        self.closed_unexpectedly = 0
        # The close codes of sockets the server closed after their handshake, by group (1006: no close frame).
        self.close_codes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: dict[str, int] = defaultdict(int)
        self.out = sys.stdout

    def reply(self, message: dict) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def on_text(self, client: Client, text: str, now: int) -> None:
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "chat.message":
            self.on_chat(client, frame.get("body", ""), now)
        elif kind == "room.activity":
            parts = ((frame.get("last_message") or {}).get("body") or "").split("|")
            if len(parts) == 3 and parts[0] == self.tag:
                self.activity_latencies.append(now - int(parts[2]))
                self.activity_frames[id(client)] += 1
        elif kind == "error":
            self.errors[frame.get("code", "?")] += 1
            if client.waiting:
                # The server refused the message (e.g. rate_limited): stop waiting for it.
                seq, waiter = next(iter(client.waiting.items()))
                del client.waiting[seq]
                if not waiter.done():
                    waiter.set_exception(RuntimeError(frame.get("code")))
        elif client.watch and kind == "presence.snapshot":
            client.snapshot_count = frame["online_count"]
        elif client.watch and kind == "presence.diff":
            client.diffs.append((now, frame["online_count"]))

    def on_chat(self, client: Client, body: str, now: int) -> None:
        parts = body.split("|")
        if len(parts) != 3 or parts[0] != self.tag:
            return
        seq = parts[1]
        self.received += 1
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        if not client.sender:
            self.latencies.append(now - int(parts[2]))
        waiter = client.waiting.pop(seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)
        count = self.per_seq[seq] = self.per_seq[seq] + 1
        expect = self.seq_waiters.get(seq)
        if expect is not None and count >= expect[0] and not expect[1].done():
            expect[1].set_result(count)

    async def cmd_open(
        self,
        group: str,
        url: str | list[str],
        cookies: list[str | None],
        origin: str,
        concurrency: int = 50,
        watch: bool = False,
        listen: bool = True,
        timeout: float = 60.0,
    ) -> dict:
        """Open one socket per cookie, to url (or to url[i] for cookie i when url is a list).

        Failed handshakes are counted by message (errors) and by reason (reasons: the HTTP status, timeout, ...).
        """
        gate = asyncio.Semaphore(concurrency)
        errors: dict[str, int] = defaultdict(int)
        reasons: dict[str, int] = defaultdict(int)
        opened = 0
        last = 0

        urls = url if isinstance(url, list) else [url] * len(cookies)
        parts = urlsplit(urls[0])
        loop = asyncio.get_running_loop()

        async def one(cookie: str | None, url: str) -> None:
            nonlocal opened, last
            headers = {"Origin": origin}
            if cookie:
                headers["Cookie"] = f"sessionid={cookie}"
            async with gate:
                client = Client(self, url, headers, group, watch, listen)
                try:
                    await loop.create_connection(lambda: client, parts.hostname, parts.port)
                    await asyncio.wait_for(client.opened, timeout)
                except Exception as error:
                    if client.transport is not None:
                        client.closing = True
                        client.transport.close()
                    errors[type(error).__name__ + ": " + str(error)[:80]] += 1
                    reasons[failure_reason(error)] += 1
                    return
            self.clients[group].append(client)
            opened += 1
            last = max(last, time.monotonic_ns())

        started = time.monotonic_ns()
        await asyncio.gather(*(one(cookie, u) for cookie, u in zip(cookies, urls)))
        return {
            "opened": opened,
            "failed": sum(errors.values()),
            "errors": dict(errors),
            "reasons": dict(reasons),
            "first_ns": started,
            "last_ns": last,
        }

    def cmd_arm(self, tag: str) -> dict:
        self.tag = tag
        self.latencies = []
        self.received = 0
        self.first_ns = self.last_ns = 0
        self.per_seq = defaultdict(int)
        self.seq_waiters = {}
        self.activity_latencies = []
        self.activity_frames = defaultdict(int)
        self.errors = defaultdict(int)
        for clients in self.clients.values():
            for client in clients:
                client.diffs = []
        return {}

    def cmd_mark_sender(self, group: str, index: int) -> dict:
        self.clients[group][index].sender = True
        return {}

    async def send(self, client: Client, seq: str) -> asyncio.Future:
        waiter = asyncio.get_running_loop().create_future()
        client.waiting[seq] = waiter
        body = f"{self.tag}|{seq}|{time.monotonic_ns()}"
        client.send_text(json.dumps({"type": "chat.message", "body": body, "client_id": str(uuid.uuid4())}))
        return waiter

    async def cmd_send(self, group: str, index: int, seq: str) -> dict:
        await self.send(self.clients[group][index], seq)
        return {}

    async def cmd_wait(self, seq: str, expect: int, timeout: float) -> dict:
        if self.per_seq[seq] < expect:
            future = asyncio.get_running_loop().create_future()
            self.seq_waiters[seq] = (expect, future)
            try:
                await asyncio.wait_for(future, timeout)
            except TimeoutError:
                pass
        return {"got": self.per_seq[seq]}

    async def cmd_flood(
        self, group: str, senders: list[int], seconds: float, ack_timeout: float = 10.0, backoff: float = 0.2
    ) -> dict:
        """Each sender sends, waits for its own message to come back, and sends again, for `seconds`.

        A message the server refuses (rate_limited: the room is busy) is
        followed by a pause of `backoff` seconds, as a page waits before it
        sends again. Returns the acknowledged messages' sequence names, unique
        across workers, so that the orchestrator can count which of them did
        not reach every receiver (counts).
        """
        deadline = time.monotonic() + seconds
        sent = timeouts = 0
        acked: list[str] = []
        refused: dict[str, int] = defaultdict(int)
        started = time.monotonic_ns()
        worker = os.getpid()

        async def loop(index: int) -> None:
            nonlocal sent, timeouts
            client = self.clients[group][index]
            n = 0
            while time.monotonic() < deadline:
                seq = f"{worker}.{index}.{n}"
                waiter = await self.send(client, seq)
                sent += 1
                n += 1
                try:
                    await asyncio.wait_for(waiter, ack_timeout)
                    acked.append(seq)
                except TimeoutError:
                    timeouts += 1
                except RuntimeError as error:
                    refused[str(error)] += 1
                    await asyncio.sleep(backoff)

        await asyncio.gather(*(loop(index) for index in senders))
        return {
            "sent": sent,
            "acked": acked,
            "ack_timeouts": timeouts,
            "refused": sum(refused.values()),
            "refused_codes": dict(refused),
            "first_ns": started,
            "last_ns": time.monotonic_ns(),
        }

    def cmd_counts(self, seqs: list[str]) -> dict:
        """How many of this worker's sockets received each of these messages."""
        return {"counts": [self.per_seq.get(seq, 0) for seq in seqs]}

    def cmd_stats(self, latencies: bool = True) -> dict:
        return {
            "tag": self.tag,
            "received": self.received,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "latencies_ns": self.latencies if latencies else [],
            "activity_latencies_ns": self.activity_latencies if latencies else [],
            "activity_frames": list(self.activity_frames.values()),
            "closed_unexpectedly": self.closed_unexpectedly,
            "errors": dict(self.errors),
            "open": {group: sum(not c.gone for c in clients) for group, clients in self.clients.items()},
        }

    def cmd_close_codes(self, group: str) -> dict:
        return {"codes": dict(self.close_codes.get(group, {}))}

    def cmd_watch_stats(self, group: str) -> dict:
        return {"watchers": [{"snapshot": c.snapshot_count, "diffs": c.diffs} for c in self.clients[group]]}

    async def cmd_close(self, group: str | None = None) -> dict:
        groups = [group] if group else list(self.clients)
        closed = 0
        for name in groups:
            clients = self.clients.pop(name, [])
            self.close_codes.pop(name, None)
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            closed += len(clients)
        return {"closed": closed}

    async def handle(self, line: str) -> None:
        message = json.loads(line)
        ident = message.pop("id")
        name = message.pop("cmd")
        try:
            result = getattr(self, f"cmd_{name}")(**message)
            if asyncio.iscoroutine(result):
                result = await result
            self.reply({"id": ident, **result})
        except Exception as error:  # reported to the orchestrator, which fails the run
            self.reply({"id": ident, "error": f"{type(error).__name__}: {error}"})

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**26)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        tasks = set()
        while line := await reader.readline():
            task = asyncio.create_task(self.handle(line.decode()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await self.cmd_close()


if __name__ == "__main__":
    raise_fd_limit()
    asyncio.run(Worker().main())
