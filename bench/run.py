"""The benchmark: the app beside its baselines, on one machine, in one invocation.

Starts its own redis-server, the servers under test (each on its own port) and
several load-generator processes (bench/loadgen.py); creates users and
sessions in bulk; measures fan-out, throughput, idle memory, a presence storm,
a handshake storm and scale-out; writes JSON lines, then the table and plot in
docs/benchmarks.md and docs/img/. Everything it starts is stopped at the end,
also on Ctrl-C or an error.

Run: .venv/bin/python bench/run.py [--profile quick|full] [--systems a,b] [--scenarios ...]
(scenarios: memory, fanout, storm, handshakes, scale, activity; all by default)
"""

import argparse
import asyncio
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

PY = sys.executable
HOST = "127.0.0.1"
ROOM = "bench"
IDLE_ROOM = "idle"
# The handshake storm's room: its own, with HANDSHAKE_HISTORY messages, whatever ran before it.
STORM_ROOM = "storm"
HANDSHAKE_HISTORY = 50
# Sockets opened in the room before the handshake storm, and kept open.
HANDSHAKE_WARM = 5
# Handshakes in flight during the handshake storm, over all load-generator processes.
HANDSHAKES_IN_FLIGHT = 100
PROFILES = {
    # N for fan-out; memory N; messages per fan-out point; throughput seconds; storm size.
    "quick": {
        "fanout": [100, 1000],
        "memory": [1000],
        "messages": 20,
        "seconds": 5,
        "storm": 1000,
        "watchers": 5,
        "activity": 1000,
        "handshakes": [1000, 5000],
    },
    "smoke": {
        "fanout": [50],
        "memory": [200],
        "messages": 5,
        "seconds": 2,
        "storm": 200,
        "watchers": 3,
        "activity": 100,
        "handshakes": [200],
    },
    "full": {
        "fanout": [100, 500, 1000, 2000],
        "memory": [1000, 10000],
        "messages": 20,
        "seconds": 10,
        "storm": 1000,
        "watchers": 10,
        "activity": 1000,
        "handshakes": [1000, 5000],
    },
}
THROUGHPUT_N = 1000
SENDERS = 10
# The activity scenario's receivers in the room, beside its members elsewhere.
ACTIVITY_IN_ROOM = 100


@dataclass
class System:
    """A server under test: how to start it and where its room is."""

    name: str
    kind: str  # floor | tutorial | app
    server: str = "daphne"  # daphne | uvicorn | websockets
    env: dict[str, str] = field(default_factory=dict)
    label: str = ""
    quick: bool = True

    def room_path(self) -> str:
        return "/" if self.kind == "floor" else f"/ws/chat/{ROOM}/"


SYSTEMS = [
    System("websockets-floor", "floor", "websockets", label="websockets alone (floor)"),
    System("tutorial", "tutorial", label="tutorial Channels room: Daphne + RedisChannelLayer"),
    System(
        "tutorial-uvicorn", "tutorial", "uvicorn", label="tutorial room on Uvicorn + RedisChannelLayer", quick=False
    ),
    System(
        "tutorial-pubsub",
        "tutorial",
        env={"TUTORIAL_LAYER": "channels_redis.pubsub.RedisPubSubChannelLayer"},
        label="tutorial room on Daphne + RedisPubSubChannelLayer",
        quick=False,
    ),
    *(
        System(
            f"{prefix}{name}",
            kind,
            server,
            env={"CHANNEL_LAYER_BACKEND": layer},
            label=f"{what}: {label}",
            quick=quick and kind == "app",
        )
        for kind, prefix, what in (("app", "app", "app"), ("standin", "nodb", "app sockets, messages not stored"))
        # The stock pattern (a group member per socket) is measured by the tutorial systems.
        for name, server, layer, label, quick in (
            ("", "daphne", "core", "Daphne + RedisChannelLayer + per-process fan-out (default)", True),
            ("-pubsub-fanout", "daphne", "pubsub", "Daphne + RedisPubSubChannelLayer + per-process fan-out", False),
            ("-uvicorn", "uvicorn", "core", "Uvicorn + RedisChannelLayer + per-process fan-out", False),
        )
    ),
]
# The systems whose presence storm and scale-out are measured.
APP_DEFAULT = "app"


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_limit(pid: int) -> int:
    """The soft limit on open files of a process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def merge_counts(counts) -> dict[str, int]:
    merged: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            merged[key] = merged.get(key, 0) + value
    return merged


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# --- processes ---------------------------------------------------------------------------


class Processes:
    """Every process the bench starts, so that all of them are stopped whatever happens."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, args: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen:
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                args, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 10.0) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(reversed(self.running)):
            self.stop(process)


class Servers:
    """One system's server processes, started on free ports."""

    def __init__(self, system: System, bench: "Bench", count: int = 1) -> None:
        from presence_site.testing import free_port, wait_for_port

        self.system = system
        self.bench = bench
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []
        env = {**bench.base_env, **system.env}
        if system.kind == "tutorial":
            env["DJANGO_SETTINGS_MODULE"] = "bench.tutorial.settings"
            module = "bench.tutorial.asgi:application"
        elif system.kind == "standin":
            module = "bench.standin:application"
        else:
            module = "presence_site.asgi:application"
        for index in range(count):
            port = free_port()
            if system.server == "websockets":
                args = [PY, "bench/floor.py", str(port)]
            elif system.server == "uvicorn":
                args = [
                    PY,
                    "-m",
                    "uvicorn",
                    module,
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--ws",
                    "websockets",
                    "--ws-max-size",
                    "65536",
                    "--ws-ping-interval",
                    "20",
                    "--ws-ping-timeout",
                    "30",
                    "--ws-per-message-deflate",
                    "false",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--lifespan",
                    "off",
                    "--backlog",
                    "4096",
                ]
            else:
                # -v 0: no access log line per socket, as Uvicorn's --no-access-log. 1 MiB, not the
                # run commands' 64 KiB: Daphne applies the limit to what it sends too, and the
                # snapshot of 1,000 online users is about 90 KB (docs/benchmarks.md).
                args = [
                    PY,
                    "-m",
                    "daphne",
                    "-v",
                    "0",
                    "-e",
                    f"tcp:{port}:interface={HOST}:backlog=4096",
                    "--websocket_timeout",
                    "86400",
                    "--ping-interval",
                    "20",
                    "--ping-timeout",
                    "30",
                    "--websocket-max-message-size",
                    "1048576",
                    module,
                ]
            log_path = bench.run_dir / f"{system.name}-{index}.log"
            process = bench.processes.start(args, env=env, log_path=log_path)
            self.processes.append(process)
            self.ports.append(port)
            wait_for_port(port, process=process, timeout=60)

    def url(self, index: int = 0) -> str:
        return f"ws://{HOST}:{self.ports[index % len(self.ports)]}{self.system.room_path()}"

    def origin(self, index: int = 0) -> str:
        return f"http://{HOST}:{self.ports[index % len(self.ports)]}"

    def rss(self) -> int:
        return sum(rss_kib(p.pid) for p in self.processes)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            self.bench.processes.stop(process)


class Worker:
    """A load-generator process, driven over its stdin and stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, log_path: Path) -> "Worker":
        process = await asyncio.create_subprocess_exec(
            PY,
            str(BASE_DIR / "bench" / "loadgen.py"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=open(log_path, "ab"),
            limit=2**28,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            future = self.pending.pop(message.pop("id"), None)
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(RuntimeError(f"load generator: {message['error']}"))
                else:
                    future.set_result(message)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(RuntimeError("load generator exited"))

    async def call(self, cmd: str, **args) -> dict:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"id": self.next_id, "cmd": cmd, **args}) + "\n").encode())
        await self.process.stdin.drain()
        return await future

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                self.process.stdin.close()
                await asyncio.wait_for(self.process.wait(), 20)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                self.process.kill()
                await self.process.wait()
        self.reader.cancel()


# --- the bench ---------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile = PROFILES[args.profile]
        self.run_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=BASE_DIR / "var"))
        self.processes = Processes()
        self.results: list[dict] = []
        self.workers: list[Worker] = []
        self.sessions: list[str] = []
        self.session_users: list[int] = []  # the user id of each session
        self.redis = None
        self.base_env: dict[str, str] = {}
        self.secret_key = secrets.token_urlsafe(50)
        self.started = datetime.now(UTC)

    # Set-up: Redis, database, users and sessions in bulk.

    def set_up(self) -> None:
        from presence_site.testing import RedisServer

        self.redis = RedisServer(self.run_dir)
        self.redis.start()
        self.processes.running.append(self.redis.process)
        sqlite_path = self.run_dir / "bench.sqlite3"
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
        env.update(
            SQLITE_PATH=str(sqlite_path),
            REDIS_URL=self.redis.url,
            DJANGO_SETTINGS_MODULE="presence_site.settings",
            LOG_LEVEL="WARNING",
            PYTHONPATH=str(BASE_DIR),
            # Production settings: no query log (DEBUG records every query), no HTTPS redirect on loopback.
            DEBUG="0",
            SECRET_KEY=self.secret_key,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SECURE_SSL_REDIRECT="0",
            # The throughput senders send flat out: lift the per-user chat and per-socket frame rate limits.
            CHAT_RATE_BURST="1000000",
            CHAT_RATE_PER_MINUTE="1000000000",
            SOCKET_FRAME_RATE="1000000",
            SOCKET_FRAME_BURST="1000000",
        )
        env.update(self.args.env)
        self.base_env = env
        # The sessions are signed here with the key the servers use.
        os.environ.update(
            SQLITE_PATH=str(sqlite_path), DJANGO_SETTINGS_MODULE="presence_site.settings", SECRET_KEY=self.secret_key
        )
        os.environ.pop("REDIS_URL", None)
        os.environ.pop("DATABASE_URL", None)
        # The orchestrator's few database calls may block its event loop: nothing is measured there.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        needed = max(max(self.profile["fanout"]), max(self.profile["memory"]), THROUGHPUT_N) + 2
        storm = self.profile["storm"] + self.profile["watchers"]
        handshakes = max(self.profile["handshakes"]) + self.profile["watchers"]
        needed = max(needed, storm, handshakes, ACTIVITY_IN_ROOM + 1 + self.profile["activity"]) + 10
        self.sessions = self.create_sessions(needed)
        self.prepare_app_state()
        self.prepare_storm_room(handshakes)

    def create_sessions(self, count: int) -> list[str]:
        """Users and logged-in sessions in bulk: no password hashing, one INSERT per batch."""
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
        from django.contrib.sessions.backends.db import SessionStore
        from django.contrib.sessions.models import Session

        started = time.monotonic()
        User = get_user_model()
        users = User.objects.bulk_create(
            [User(username=f"bench{i:05d}", password=f"!{secrets.token_hex(8)}") for i in range(count)],
            batch_size=2000,
        )
        store = SessionStore()
        expires = datetime.now(UTC) + timedelta(days=1)
        sessions = []
        for user in users:
            data = {
                SESSION_KEY: str(user.pk),
                BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                HASH_SESSION_KEY: user.get_session_auth_hash(),
            }
            sessions.append(
                Session(session_key=secrets.token_hex(16), session_data=store.encode(data), expire_date=expires)
            )
        Session.objects.bulk_create(sessions, batch_size=2000)
        self.session_users = [user.pk for user in users]
        log(f"{count} users and sessions created in {time.monotonic() - started:.1f} s")
        return [s.session_key for s in sessions]

    def prepare_storm_room(self, members: int) -> None:
        """The handshake storm's room: HANDSHAKE_HISTORY messages, and the first `members` bench users its members.

        A storm of sockets is a crowd coming back (a restart, a network back up): members of the room, who get
        its history as they open.
        """
        from django.contrib.auth import get_user_model

        from chat.models import Membership, Room
        from chat.services import message_post

        room = Room.objects.get(slug=STORM_ROOM)
        users = list(get_user_model().objects.filter(pk__in=self.session_users[-HANDSHAKE_HISTORY:]))
        for n, user in enumerate(users):
            message_post(room=room, user=user, body=f"Message {n} of the room's history, with some words in it.")
        newest = room.messages.order_by("-id").values_list("id", flat=True).first() or 0
        Membership.objects.bulk_create(
            [Membership(room=room, user_id=user_id, last_read_id=newest) for user_id in self.session_users[:members]],
            batch_size=2000,
            ignore_conflicts=True,
        )

    def set_statuses(self, indexes) -> int:
        """A status (and do-not-disturb on every other one) on these bench users: snapshots and lists carry them."""
        from django.contrib.auth import get_user_model

        from presence.models import UserPresence

        names = [f"bench{i:05d}" for i in indexes]
        ids = list(get_user_model().objects.filter(username__in=names).values_list("id", flat=True))
        UserPresence.objects.bulk_create(
            [
                UserPresence(user_id=user_id, status_text="In a meeting", status_emoji="📅", dnd=n % 2 == 0)
                for n, user_id in enumerate(ids)
            ],
            batch_size=2000,
        )
        return len(ids)

    def prepare_app_state(self) -> None:
        """Forget sockets of servers stopped earlier, and make sure the bench room exists."""
        from presence.models import Connection, UserPresence

        Connection.objects.all().delete()
        UserPresence.objects.all().delete()
        try:
            from chat.models import Room  # the chat app, once it exists
        except ImportError:
            return
        slugs = [ROOM, STORM_ROOM] + [f"{IDLE_ROOM}-{i}" for i in range(max(self.profile["memory"]) // 10 + 1)]
        existing = set(Room.objects.filter(slug__in=slugs).values_list("slug", flat=True))
        Room.objects.bulk_create([Room(slug=slug, title=slug) for slug in slugs if slug not in existing])

    async def start_workers(self) -> None:
        self.workers = [await Worker.start(self.run_dir / f"loadgen-{i}.log") for i in range(self.args.workers)]

    def record(self, **result) -> dict:
        result = {"run": self.started.isoformat(timespec="seconds"), "profile": self.args.profile, **result}
        self.results.append(result)
        log(json.dumps({k: v for k, v in result.items() if k not in {"run", "profile"}}))
        return result

    # Opening sockets across the workers.

    async def open(
        self,
        servers: Servers,
        group: str,
        sessions: list[str],
        *,
        path: str | None = None,
        paths: list[str] | None = None,
        watch: bool = False,
        listen: bool = True,
        concurrency: int = 50,
        spread_servers: bool = True,
    ) -> dict:
        """Open one socket per session (to path, or paths[i]), spread round-robin over workers and servers."""
        parts: dict[tuple[int, int], list[tuple[str, str]]] = {}
        for i, key in enumerate(sessions):
            w = i % len(self.workers)
            s = (i // len(self.workers)) % len(servers.ports) if spread_servers else 0
            where = paths[i] if paths else (path or servers.system.room_path())
            parts.setdefault((w, s), []).append((key, f"ws://{HOST}:{servers.ports[s]}{where}"))
        calls = []
        for (w, s), items in parts.items():
            calls.append(
                self.workers[w].call(
                    "open",
                    group=group,
                    url=[u for _, u in items],
                    cookies=[k for k, _ in items],
                    origin=servers.origin(s),
                    concurrency=concurrency,
                    watch=watch,
                    listen=listen,
                )
            )
        replies = await asyncio.gather(*calls)
        opened = sum(r["opened"] for r in replies)
        failed = sum(r["failed"] for r in replies)
        errors = merge_counts(r["errors"] for r in replies)
        if failed:
            log(f"  {failed} of {len(sessions)} sockets failed to open: {errors}")
        return {
            "opened": opened,
            "failed": failed,
            "errors": errors,
            "reasons": merge_counts(r["reasons"] for r in replies),
            "first_ns": min(r["first_ns"] for r in replies),
            "last_ns": max(r["last_ns"] for r in replies),
        }

    async def everyone(self, cmd: str, **args) -> list[dict]:
        return await asyncio.gather(*(w.call(cmd, **args) for w in self.workers))

    def generator_cpu_seconds(self) -> float:
        return sum(cpu_seconds(w.process.pid) for w in self.workers)

    async def room_size(self) -> int:
        stats = await self.everyone("stats", latencies=False)
        return sum(s["open"].get("room", 0) for s in stats)

    # Scenarios.

    async def fanout(self, system: System, servers: Servers, n: int, note: str = "", record: bool = True) -> dict:
        """One sender; each message waits until every receiver has it (or a timeout) before the next."""
        tag = f"f{n}{note}{time.monotonic_ns() % 10**6}"
        await self.everyone("arm", tag=tag)
        size = await self.room_size()
        per_worker = [s["open"].get("room", 0) for s in await self.everyone("stats", latencies=False)]
        messages = self.profile["messages"]
        timeouts = 0
        for seq in range(messages):
            await self.workers[0].call("send", group="room", index=0, seq=str(seq))
            got = await asyncio.gather(
                *(w.call("wait", seq=str(seq), expect=per_worker[i], timeout=10.0) for i, w in enumerate(self.workers))
            )
            if sum(g["got"] for g in got) < size:
                timeouts += 1
            await asyncio.sleep(0.05)  # a pause between broadcasts, so that each one is measured alone
        stats = await self.everyone("stats")
        latencies = sorted(x / 1e6 for s in stats for x in s["latencies_ns"])
        received = sum(s["received"] for s in stats)
        return (self.record if record else dict)(
            system=system.name,
            scenario="fanout",
            n=size - 1,
            processes=len(servers.ports),
            messages=messages,
            p50_ms=round(percentile(latencies, 50), 2),
            p95_ms=round(percentile(latencies, 95), 2),
            p99_ms=round(percentile(latencies, 99), 2),
            max_ms=round(latencies[-1], 2) if latencies else None,
            lost=messages * size - received,
            broadcasts_timed_out=timeouts,
            errors=merge_counts(s["errors"] for s in stats),
        )

    async def throughput(self, system: System, servers: Servers, note: str = "") -> dict:
        """SENDERS room members send flat out (each waits for its own message back) for T seconds.

        A message refused as rate_limited (the room is busy) is followed by a
        short pause; lost_acked counts the acknowledged messages that did not
        reach every socket of the room. Server RSS before, when the senders
        stop, and once the run has settled.
        """
        tag = f"t{note}{time.monotonic_ns() % 10**6}"
        await self.everyone("arm", tag=tag)
        size = await self.room_size()
        seconds = self.args.throughput_seconds or self.profile["seconds"]
        per_worker: dict[int, list[int]] = {}
        for k in range(SENDERS):
            # Sender k is the (1 + k // workers)-th room socket of worker k % workers: index 0 is the fan-out sender.
            per_worker.setdefault(k % len(self.workers), []).append(1 + k // len(self.workers))
        profiler = self.start_profiler(system, servers, seconds) if self.args.py_spy else None
        rss_before = servers.rss()
        cpu_server, cpu_generator = servers.cpu_seconds(), self.generator_cpu_seconds()
        floods = await asyncio.gather(
            *(
                self.workers[w].call("flood", group="room", senders=idx, seconds=seconds)
                for w, idx in per_worker.items()
            )
        )
        rss_sending = servers.rss()
        sent = sum(f["sent"] - f["refused"] for f in floods)
        expected = sent * size
        # Wait for the tail: stop when everything arrived or nothing moved for 3 s.
        received, still = -1, 0
        while still < 12:
            stats = await self.everyone("stats", latencies=False)
            now_received = sum(s["received"] for s in stats)
            if now_received >= expected:
                break
            still = still + 1 if now_received == received else 0
            received = now_received
            await asyncio.sleep(0.25)
        cpu_server, cpu_generator = servers.cpu_seconds() - cpu_server, self.generator_cpu_seconds() - cpu_generator
        stats = await self.everyone("stats")
        received = sum(s["received"] for s in stats)
        first = min(f["first_ns"] for f in floods)
        last = max(s["last_ns"] for s in stats if s["last_ns"]) if received else first
        latencies = sorted(x / 1e6 for s in stats for x in s["latencies_ns"])
        acked = [seq for f in floods for seq in f["acked"]]
        counts = [0] * len(acked)
        for reply in await self.everyone("counts", seqs=acked):
            counts = [a + b for a, b in zip(counts, reply["counts"])]
        if profiler is not None:
            self.finish_profiler(profiler)
        await self.settle(servers=servers)
        return self.record(
            system=system.name,
            scenario="throughput",
            n=size,
            processes=len(servers.ports),
            senders=SENDERS,
            seconds=seconds,
            messages=sent,
            deliveries=received,
            deliveries_per_s=round(received / max(1e-9, (last - first) / 1e9)),
            lost=expected - received,
            acked=len(acked),
            lost_acked=sum(count < size for count in counts),
            p50_ms=round(percentile(latencies, 50), 2),
            p99_ms=round(percentile(latencies, 99), 2),
            server_cpu_s=round(cpu_server, 2),
            generator_cpu_s=round(cpu_generator, 2),
            server_us_per_delivery=round(cpu_server * 1e6 / received, 1) if received else None,
            ack_timeouts=sum(f["ack_timeouts"] for f in floods),
            refused=sum(f["refused"] for f in floods),
            refused_rate_limited=sum(f["refused_codes"].get("rate_limited", 0) for f in floods),
            rss_before_mib=round(rss_before / 1024, 1),
            rss_sending_mib=round(rss_sending / 1024, 1),
            rss_after_mib=round(servers.rss() / 1024, 1),
            errors=merge_counts(s["errors"] for s in stats),
        )

    async def memory(self, system: System) -> None:
        """Server RSS per idle authenticated socket, on a fresh server."""
        census = self.run_dir / f"tracemalloc-{system.name}.txt"
        if self.args.tracemalloc:
            system = System(system.name, system.kind, system.server, {**system.env, "BENCH_TRACEMALLOC": str(census)})
        servers = Servers(system, self)
        try:
            keys = self.sessions
            await self.open(servers, "warm", keys[-1:])
            await self.settle(servers=servers)
            base = servers.rss()
            if self.args.tracemalloc:
                servers.processes[0].send_signal(signal.SIGUSR1)
            opened = 0
            for n in self.profile["memory"]:
                # Rooms of 10, so that the room presence frames of a crowd joining one room stay out of it.
                paths = (
                    None if system.kind == "floor" else [f"/ws/chat/{IDLE_ROOM}-{i // 10}/" for i in range(opened, n)]
                )
                result = await self.open(servers, "idle", keys[opened:n], paths=paths, concurrency=25)
                opened = n
                await self.settle(3.0, servers=servers)
                rss = servers.rss()
                stats = await self.everyone("stats", latencies=False)
                still_open = sum(s["open"].get("idle", 0) for s in stats)
                self.record(
                    system=system.name,
                    scenario="memory",
                    n=n,
                    rss_base_mib=round(base / 1024, 1),
                    rss_mib=round(rss / 1024, 1),
                    kib_per_socket=round((rss - base) / max(1, still_open), 1),
                    failed=result["failed"],
                    open_after=still_open,
                )
            if self.args.tracemalloc:
                servers.processes[0].send_signal(signal.SIGUSR1)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not (census.exists() and census.stat().st_size):
                    await asyncio.sleep(0.5)
                await self.settle(1.0, servers=servers)
        finally:
            await self.everyone("close")
            servers.stop()
            self.prepare_app_state()

    async def settle(self, seconds: float = 1.0, servers: "Servers | None" = None) -> None:
        """Let the servers finish what a burst of handshakes left behind: until they idle, or `seconds`."""
        if servers is None:
            await asyncio.sleep(seconds)
            return
        deadline = time.monotonic() + max(seconds, 60.0)
        before = servers.cpu_seconds()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            now = servers.cpu_seconds()
            if now - before < 0.05:  # under 10% of a core over half a second
                return
            before = now
        log(f"  {servers.system.name} still busy after {max(seconds, 60.0):.0f} s")

    async def latency_series(self, system: System) -> None:
        """Fan-out at each N, then throughput at THROUGHPUT_N, on one server with sockets kept open."""
        servers = Servers(system, self)
        try:
            keys = self.sessions
            sender = await self.open(servers, "room", keys[:1])
            if sender["opened"] != 1:
                raise RuntimeError(f"{system.name}: the sender could not connect: {sender['errors']}")
            await self.workers[0].call("mark_sender", group="room", index=0)
            opened = 1
            points = sorted(set(self.profile["fanout"]) | {THROUGHPUT_N})
            for n in points:
                await self.open(servers, "room", keys[opened : n + 1], concurrency=25)
                opened = n + 1
                await self.settle(servers=servers)
                if n in self.profile["fanout"]:
                    await self.fanout(system, servers, n)
                if n == THROUGHPUT_N:
                    await self.throughput(system, servers)
        finally:
            await self.everyone("close")
            servers.stop()
            self.prepare_app_state()

    async def storm(self, system: System) -> None:
        """Watchers on /ws/presence/, then N users connect at once: when is the count right, in how many frames."""
        servers = Servers(system, self)
        watchers_n, n = self.profile["watchers"], self.profile["storm"]
        try:
            keys = self.sessions
            with_status = self.set_statuses(range(watchers_n, watchers_n + n, 10))
            await self.open(servers, "watchers", keys[:watchers_n], path="/ws/presence/", watch=True)
            await self.settle(1.0, servers=servers)
            await self.everyone("arm", tag="storm")
            profiler = self.start_profiler(system, servers, 8, "storm") if self.args.py_spy else None
            result = await self.open(
                servers, "storm", keys[watchers_n : watchers_n + n], path="/ws/presence/", concurrency=100
            )
            expected = watchers_n + result["opened"]
            deadline = time.monotonic() + 15
            watchers: list[dict] = []
            while time.monotonic() < deadline:
                watchers = [
                    w for reply in await self.everyone("watch_stats", group="watchers") for w in reply["watchers"]
                ]
                if watchers and all(w["diffs"] and w["diffs"][-1][1] == expected for w in watchers):
                    break
                await asyncio.sleep(0.2)
            if profiler is not None:
                self.finish_profiler(profiler)
            last_connect = result["last_ns"]
            delays, frames, min_gaps, rates = [], [], [], []
            for w in watchers:
                right = next((t for t, count in w["diffs"] if count == expected), None)
                delays.append(None if right is None else (right - last_connect) / 1e9)
                frames.append(len(w["diffs"]))
                gaps = [(b[0] - a[0]) / 1e9 for a, b in zip(w["diffs"], w["diffs"][1:])]
                min_gaps.append(min(gaps) if gaps else None)
                # Frames per 250 ms over the span of the diffs: at most 1 when they come at most one per 250 ms.
                span = (w["diffs"][-1][0] - w["diffs"][0][0]) / 1e9 if w["diffs"] else 0.0
                rates.append((len(w["diffs"]) - 1) / (span / 0.25) if span > 0 else 0.0)
            storm_s = (result["last_ns"] - result["first_ns"]) / 1e9
            known = [d for d in delays if d is not None]
            self.record(
                system=system.name,
                scenario="storm",
                n=n,
                watchers=len(watchers),
                opened=result["opened"],
                failed=result["failed"],
                connect_s=round(storm_s, 2),
                with_status=with_status,
                expected_count=expected,
                watchers_right=len(known),
                right_after_last_connect_s=round(max(known), 3) if known else None,
                frames_per_watcher=max(frames) if frames else None,
                min_gap_s=round(min(g for g in min_gaps if g is not None), 3) if any(min_gaps) else None,
                frames_per_250ms=round(max(rates), 2) if rates else None,
            )
        finally:
            await self.everyone("close")
            servers.stop()
            self.prepare_app_state()

    async def handshakes(self, system: System) -> None:
        """A storm of handshakes into one room of one process: N sockets, each with its own session, opened as fast
        as HANDSHAKES_IN_FLIGHT at a time allow. For the app, watchers on /ws/presence/ opened before it: when is
        every one of them right (online count = watchers + sockets held) after the last connect.

        Recorded per N: handshakes/s (opened / first to last connect), the refused ones by reason (HTTP status,
        timeout, close code after the handshake), the server's CPU per handshake (until it idles again, so the
        presence and room frames each socket causes count), and the generator's CPU: its busiest process's share of
        a core over the storm says whether the generator, not the server, set the pace.
        """
        watchers_n = self.profile["watchers"] if system.kind == "app" else 0
        path = "/" if system.kind == "floor" else f"/ws/chat/{STORM_ROOM}/"
        keys = self.sessions
        for n in self.profile["handshakes"]:
            servers = Servers(system, self)
            try:
                limit = fd_limit(servers.processes[0].pid)
                if limit < n + 1000:
                    raise RuntimeError(f"{system.name}: the server may open {limit} files, too few for {n} sockets")
                # A few sockets in the room first, kept open: the first handshakes of a fresh process (imports,
                # database and Redis connections, thread pool) stay out of the storm.
                await self.open(servers, "warm", keys[-HANDSHAKE_WARM:], path=path)
                if watchers_n:
                    await self.open(servers, "watchers", keys[:watchers_n], path="/ws/presence/", watch=True)
                await self.settle(1.0, servers=servers)
                await self.everyone("arm", tag=f"h{n}")
                profiler = None
                if self.args.py_spy and system.kind == "app":
                    profiler = self.start_profiler(system, servers, 0, f"handshakes-{n}", threads=True)
                    await asyncio.sleep(1.0)  # py-spy attaches before the first handshake
                cpu_server = servers.cpu_seconds()
                cpu_workers = [cpu_seconds(w.process.pid) for w in self.workers]
                result = await self.open(
                    servers,
                    "storm",
                    keys[watchers_n : watchers_n + n],
                    path=path,
                    listen=False,
                    concurrency=max(1, HANDSHAKES_IN_FLIGHT // len(self.workers)),
                )
                cpu_workers = [cpu_seconds(w.process.pid) - c for w, c in zip(self.workers, cpu_workers)]
                storm_s = max(1e-9, (result["last_ns"] - result["first_ns"]) / 1e9)
                right_s, watchers_right, watcher_counts = None, 0, []
                if watchers_n:
                    right_s, watchers_right, watcher_counts = await self.watchers_right(
                        watchers_n + HANDSHAKE_WARM, watchers_n, result, timeout=30.0
                    )
                if profiler is not None:
                    self.finish_profiler(profiler, interrupt=True)
                await self.settle(servers=servers)
                cpu_server = servers.cpu_seconds() - cpu_server
                # What the N open sockets cost the idle server (Daphne checks every connection ten times a second):
                # part of the CPU per handshake, the more so the longer the storm lasts.
                idle = servers.cpu_seconds()
                await asyncio.sleep(2.0)
                idle = (servers.cpu_seconds() - idle) / 2.0
                closes = merge_counts(r["codes"] for r in await self.everyone("close_codes", group="storm"))
                refusals = {**result["reasons"], **{f"close {code}": count for code, count in closes.items()}}
                self.record(
                    system=system.name,
                    scenario="handshakes",
                    n=n,
                    in_flight=HANDSHAKES_IN_FLIGHT,
                    generators=len(self.workers),
                    opened=result["opened"],
                    refused=sum(refusals.values()),
                    refusals=refusals,
                    connect_s=round(storm_s, 2),
                    handshakes_per_s=round(result["opened"] / storm_s),
                    watchers=watchers_n,
                    watchers_right=watchers_right,
                    right_after_last_connect_s=right_s,
                    # What the watchers' online count should be, and the last each saw.
                    watchers_expected=(
                        watchers_n + HANDSHAKE_WARM + result["opened"] - sum(closes.values()) if watchers_n else None
                    ),
                    watcher_counts=watcher_counts,
                    server_cpu_s=round(cpu_server, 2),
                    server_cpu_ms_per_handshake=round(cpu_server * 1000 / max(1, result["opened"]), 2),
                    server_idle_core_share=round(idle, 3),
                    generator_cpu_s=round(sum(cpu_workers), 2),
                    generator_busiest_core_share=round(max(cpu_workers) / storm_s, 2),
                    server_fd_limit=limit,
                )
            finally:
                await self.everyone("close")
                servers.stop()
                self.prepare_app_state()

    async def watchers_right(
        self, online_before: int, watchers_n: int, storm: dict, timeout: float
    ) -> tuple[float | None, int, list[int | None]]:
        """Wait until every watcher's online count is online_before + the storm's sockets still open (or `timeout`):
        seconds from the last connect until the last of them was right for good (from the diff after its last wrong
        one on), how many were right at the end, and the last count each saw."""
        deadline = time.monotonic() + timeout
        watchers: list[dict] = []
        expected = online_before + storm["opened"]
        while time.monotonic() < deadline:
            stats = await self.everyone("stats", latencies=False)
            expected = online_before + sum(s["open"].get("storm", 0) for s in stats)
            watchers = [w for reply in await self.everyone("watch_stats", group="watchers") for w in reply["watchers"]]
            if watchers and all(w["diffs"] and w["diffs"][-1][1] == expected for w in watchers):
                break
            await asyncio.sleep(0.1)
        right = []
        for w in watchers:
            wrong = [i for i, (_, count) in enumerate(w["diffs"]) if count != expected]
            after = wrong[-1] + 1 if wrong else 0
            right.append(w["diffs"][after][0] if after < len(w["diffs"]) else None)
        known = [(t - storm["last_ns"]) / 1e9 for t in right if t is not None]
        last_counts = [w["diffs"][-1][1] if w["diffs"] else w["snapshot"] for w in watchers]
        if len(known) < watchers_n:
            return None, len(known), last_counts
        return round(max(known), 3), len(known), last_counts

    async def activity(self, system: System) -> None:
        """room.activity: one sender and ACTIVITY_IN_ROOM receivers in the room, first alone, then with N more
        members of the room online elsewhere (on /ws/presence/), who hear of each message through room.activity.

        Recorded: the room's fan-out with and without them (the sender's path), the activity frames each member
        got and their latency from send, and the server's CPU per message in both.
        """
        from chat.models import Membership, Room

        servers = Servers(system, self)
        n = self.profile["activity"]
        keys, users = self.sessions, self.session_users
        try:
            await self.open(servers, "room", keys[:1])
            await self.workers[0].call("mark_sender", group="room", index=0)
            await self.open(servers, "room", keys[1 : ACTIVITY_IN_ROOM + 1], concurrency=25)
            await self.settle(servers=servers)
            room = Room.objects.get(slug=ROOM)
            members = users[ACTIVITY_IN_ROOM + 1 : ACTIVITY_IN_ROOM + 1 + n]
            for elsewhere in (0, n):
                if elsewhere:
                    Membership.objects.bulk_create(
                        [Membership(room=room, user_id=user_id) for user_id in members], ignore_conflicts=True
                    )
                    await self.open(
                        servers, "members", keys[ACTIVITY_IN_ROOM + 1 : ACTIVITY_IN_ROOM + 1 + n], path="/ws/presence/"
                    )
                    await self.settle(servers=servers)
                profiler = None
                if self.args.py_spy and elsewhere:
                    profiler = self.start_profiler(system, servers, 5, "activity")
                cpu_before = servers.cpu_seconds()
                result = await self.fanout(system, servers, ACTIVITY_IN_ROOM, note=f"a{elsewhere}", record=False)
                if profiler is not None:
                    self.finish_profiler(profiler)
                # The last flush comes within a window of the last message.
                await asyncio.sleep(1.0)
                cpu = servers.cpu_seconds() - cpu_before
                stats = await self.everyone("stats")
                latencies = sorted(x / 1e6 for s in stats for x in s["activity_latencies_ns"])
                frames = [count for s in stats for count in s["activity_frames"]]
                self.record(
                    system=system.name,
                    scenario="activity",
                    n=ACTIVITY_IN_ROOM,
                    members_elsewhere=elsewhere,
                    messages=result["messages"],
                    fanout_p50_ms=result["p50_ms"],
                    fanout_p99_ms=result["p99_ms"],
                    lost=result["lost"],
                    activity_frames=sum(frames),
                    members_reached=len(frames),
                    frames_per_member_max=max(frames) if frames else 0,
                    activity_p50_ms=round(percentile(latencies, 50), 1) if latencies else None,
                    activity_p99_ms=round(percentile(latencies, 99), 1) if latencies else None,
                    server_cpu_ms_per_message=round(cpu * 1000 / result["messages"], 1),
                )
        finally:
            await self.everyone("close")
            servers.stop()
            self.prepare_app_state()

    async def scale_out(self, system: System) -> None:
        """The fan-out and throughput at THROUGHPUT_N with the room spread over two processes."""
        servers = Servers(system, self, count=2)
        try:
            keys = self.sessions
            await self.open(servers, "room", keys[:1], spread_servers=False)
            await self.workers[0].call("mark_sender", group="room", index=0)
            await self.open(servers, "room", keys[1 : THROUGHPUT_N + 1], concurrency=25)
            await self.settle(servers=servers)
            await self.fanout(system, servers, THROUGHPUT_N, note="x2")
            await self.throughput(system, servers, note="x2")
        finally:
            await self.everyone("close")
            servers.stop()
            self.prepare_app_state()

    # Profiling the server under load, with py-spy.

    def start_profiler(
        self, system: System, servers: Servers, seconds: float, what: str = "throughput", threads: bool = False
    ) -> subprocess.Popen | None:
        """py-spy on the first server for `seconds` (0: until finish_profiler(interrupt=True)); threads: the stacks
        start with their thread (the event loop's, the database's), which profile_summary.py sums apart."""
        py_spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        if not Path(py_spy).exists():
            log("  py-spy is not installed; no profile")
            return None
        out = self.run_dir / f"profile-{system.name}-{what}-{len(servers.ports)}p.txt"
        return self.processes.start(
            [
                py_spy,
                "record",
                "-p",
                str(servers.processes[0].pid),
                *(["-d", str(int(seconds))] if seconds else []),
                *(["--threads"] if threads else []),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(out),
            ],
            env=dict(os.environ),
            log_path=self.run_dir / "py-spy.log",
        )

    def finish_profiler(self, profiler: subprocess.Popen, interrupt: bool = False) -> None:
        if interrupt:
            profiler.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        try:
            profiler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.processes.stop(profiler)

    # The whole run.

    def systems(self) -> list[System]:
        chosen = [s for s in SYSTEMS if self.args.profile == "full" or s.quick]
        if self.args.systems:
            names = self.args.systems.split(",")
            chosen = [s for s in SYSTEMS if s.name in names]
            unknown = set(names) - {s.name for s in SYSTEMS}
            if unknown:
                raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
        return chosen

    async def run(self) -> None:
        self.set_up()
        await self.start_workers()
        scenarios = set(self.args.scenarios.split(","))
        for system in self.systems():
            log(f"== {system.name}: {system.label}")
            try:
                if "memory" in scenarios:
                    await self.memory(system)
                if "fanout" in scenarios:
                    await self.latency_series(system)
                if system.name in self.args.whole and "storm" in scenarios:
                    await self.storm(system)
                if (system.kind != "app" or system.name in self.args.whole) and "handshakes" in scenarios:
                    await self.handshakes(system)
                if system.name in self.args.whole and "scale" in scenarios:
                    await self.scale_out(system)
                if system.kind == "app" and "activity" in scenarios:
                    await self.activity(system)
            except Exception as error:
                self.record(system=system.name, scenario="error", error=f"{type(error).__name__}: {error}")
                if self.args.fail_fast:
                    raise

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()


def machine() -> dict:
    import channels
    import channels_redis
    import daphne
    import django
    import redis
    import uvicorn
    import websockets

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            "django": django.__version__,
            "channels": channels.__version__,
            "channels-redis": channels_redis.__version__,
            "daphne": daphne.__version__,
            "uvicorn": uvicorn.__version__,
            "websockets": websockets.__version__,
            "redis-py": redis.__version__,
            "redis-server": next((w.split("=")[1] for w in redis_version if w.startswith("v=")), "?"),
        },
        "load_before": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument("--systems", default="", help="comma-separated names (default: all of the profile)")
    parser.add_argument("--scenarios", default="memory,fanout,storm,handshakes,scale,activity")
    parser.add_argument(
        "--whole",
        default=APP_DEFAULT,
        type=lambda v: v.split(","),
        help="app systems whose presence storm, handshake storm and scale-out are measured too",
    )
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="memory census of the stand-in servers (bench/standin.py) in the memory scenario",
    )
    parser.add_argument(
        "--py-spy", action="store_true", help="profile the first server during throughput and the storms"
    )
    parser.add_argument(
        "--throughput-seconds", type=float, default=0, help="how long the throughput senders send (default: profile's)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=lambda kv: tuple(kv.split("=", 1)),
        help="KEY=VALUE for every server (repeatable)",
    )
    parser.add_argument("--results", default=str(BASE_DIR / "docs" / "benchmarks.jsonl"))
    parser.add_argument("--append", action="store_true", help="add to the results file instead of replacing it")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--fail-fast", action="store_true")
    parser.add_argument("--list", action="store_true", help="list the systems and exit")
    args = parser.parse_args()
    args.env = dict(args.env)
    if args.list:
        for system in SYSTEMS:
            print(f"{system.name:<22} {'quick+full' if system.quick else 'full':<11} {system.label}")
        return
    (BASE_DIR / "var").mkdir(exist_ok=True)
    hard = raise_fd_limit()
    bench = Bench(args)
    info = machine()
    info["fd_limit"] = hard
    info["command"] = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    log(f"bench in {bench.run_dir}; load {info['load_before']}")

    def interrupted(signum, frame):  # SIGTERM behaves as Ctrl-C: unwind and stop everything
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        asyncio.run(main_async(bench))
    finally:
        bench.processes.stop_all()
    info["load_after"] = os.getloadavg()
    info["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    with open(args.results, "a" if args.append else "w") as out:
        out.write(json.dumps({"machine": info}) + "\n")
        for result in bench.results:
            out.write(json.dumps(result) + "\n")
    log(f"results: {args.results}")
    if not args.no_report:
        from bench.report import write_report

        write_report(Path(args.results))


async def main_async(bench: Bench) -> None:
    try:
        await bench.run()
    finally:
        await bench.close()


if __name__ == "__main__":
    main()
