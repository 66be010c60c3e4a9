"""A soak of the production shape: sockets churning, chat, presence watchers, for minutes on end.

    python -m presence_site.soak --minutes 30      # what `make soak` runs (SOAK_MINUTES)

One Stack (presence_site.stack: Redis, PostgreSQL, two Daphne processes, nginx)
serves the run. Clients are presence_site.testing.ResilientClient:

- churn: sockets opening and closing at `churn_rate` a second through nginx,
  each for a user of a pool (up to three at once per user, so tabs overlap,
  users go offline and come back), on /ws/presence/ or a room;
- chat: two members in each of `rooms` rooms, open for the whole run, sending
  `chat_rate` messages a second between them; every acknowledged message must
  reach every member of its room whose socket stayed open the whole time;
- watchers on /ws/presence/ of each process, whose view (snapshot plus diffs)
  is checked every 5 s against the sockets the soak itself holds: nobody shown
  online `tolerance` seconds after their last socket closed, nobody shown
  offline while a socket of theirs has been open that long. The database is
  not the reference: a missed leave leaves a ghost row there too.

Every minute it prints each Daphne process's RSS and open files, Redis's
memory, the `Connection` rows and the acknowledged messages lost so far; the
last lines are the verdict, and the exit status is 0 when every part holds.
"""

import argparse
import asyncio
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from presence_site.stack import Stack
from presence_site.testing import ResilientClient, wait_all

CHECK_INTERVAL = 5.0  # seconds between two checks of the watchers' views
RSS_GROWTH_LIMIT = 0.05  # after the warm-up, per process
SETTLE_TIMEOUT = 60.0  # seconds for open files and rows to come back once the churn stops
MAX_TABS = 3  # churn sockets of one user at once (the server allows 10)


@dataclass
class Sample:
    """One minute's figures."""

    at: float  # seconds since the load started
    rss_kib: list[int]
    open_files: list[int]
    redis_bytes: int
    connections: int
    acked: int
    lost: int


@dataclass
class Violation:
    """A watcher that showed a user in the wrong state for longer than the tolerance."""

    at: float
    watcher: str
    username: str
    kind: str  # "ghost" (shown online, no socket) or "missing" (shown offline, a socket open)
    for_seconds: float

    def __str__(self) -> str:
        state = "online with no socket" if self.kind == "ghost" else "offline with a socket open"
        return f"{self.at:.0f} s: {self.watcher} showed {self.username} {state} for {self.for_seconds:.1f} s"


@dataclass
class Verdict:
    """What the soak measured and whether each part held."""

    minutes: float
    warmup: float
    samples: list[Sample] = field(default_factory=list)
    # Per process: (RSS at the end of the warm-up, RSS at the end) in KiB.
    rss: list[tuple[int, int]] = field(default_factory=list)
    open_files: list[tuple[int, int]] = field(default_factory=list)  # (baseline, after the churn)
    open_files_kinds: list[tuple[dict, dict]] = field(default_factory=list)  # the same, by kind
    connections: tuple[int, int] = (0, 0)  # (baseline, after the churn)
    # The churn's rows left after it: (username, endpoint, opened_at) of a few.
    leftover: list[tuple[str, str, str]] = field(default_factory=list)
    churn_opened: int = 0
    churn_failed: int = 0
    acked: int = 0
    unacked: int = 0  # sent and never acknowledged (the sender would see them pending)
    lost: list[str] = field(default_factory=list)  # "<room> #<id> missing at <member>"
    violations: list[Violation] = field(default_factory=list)
    sweep_leaves: int = 0  # users the heartbeat's sweep found online with no socket

    def failures(self) -> list[str]:
        """What did not hold, one line each; empty when the soak passed."""
        failed = []
        for index, (before, after) in enumerate(self.rss):
            growth = (after - before) / before
            if growth >= RSS_GROWTH_LIMIT:
                failed.append(
                    f"daphne-{index} RSS grew {growth:.1%} after the warm-up ({before / 1024:.1f} → "
                    f"{after / 1024:.1f} MiB), over {RSS_GROWTH_LIMIT:.0%}"
                )
        for index, (before, after) in enumerate(self.open_files_kinds):
            if own_files(after) > own_files(before):
                failed.append(
                    f"daphne-{index} holds {own_files(after)} open files (not counting its database and Redis "
                    f"pools) after the churn, {own_files(before)} before it: {before} → {after}"
                )
        if self.connections[1] != self.connections[0]:
            failed.append(
                f"{self.connections[1]} Connection rows after the churn, {self.connections[0]} before it, "
                f"e.g. {self.leftover[:3]}"
            )
        if self.lost:
            failed.append(f"{len(self.lost)} acknowledged messages lost, e.g. {self.lost[:3]}")
        if self.violations:
            failed.append(
                f"{len(self.violations)} presence violations, e.g. " + "; ".join(map(str, self.violations[:3]))
            )
        return failed

    def report(self) -> str:
        lines = [
            f"soak of {self.minutes:g} min (warm-up {self.warmup:g} min): {self.churn_opened} churn sockets opened "
            f"({self.churn_failed} failed), {self.acked} chat messages acknowledged ({self.unacked} never were)",
        ]
        for index, (before, after) in enumerate(self.rss):
            kinds = self.open_files_kinds[index] if self.open_files_kinds else ({}, {})
            lines.append(
                f"  daphne-{index}: RSS {before / 1024:.1f} → {after / 1024:.1f} MiB after the warm-up "
                f"({(after - before) / before:+.1%}); open files {self.open_files[index][0]} before the churn "
                f"{kinds[0]}, {self.open_files[index][1]} after {kinds[1]}"
            )
        lines.append(f"  Connection rows: {self.connections[0]} before the churn, {self.connections[1]} after")
        lines.append(f"  acknowledged messages lost: {len(self.lost)}")
        lines.append(
            f"  presence violations: {len(self.violations)}; sweep leaves (missed leaves): {self.sweep_leaves}"
        )
        failed = self.failures()
        lines.append("PASS" if not failed else "FAIL\n" + "\n".join(f"  - {line}" for line in failed))
        return "\n".join(lines)


def own_files(kinds: dict[str, int]) -> int:
    """Open files but the database and Redis connections, which the pools keep for reuse at their high-water mark."""
    return sum(kinds.values()) - kinds.get("redis", 0) - kinds.get("postgres", 0)


def describe(kinds_per_process: list[dict[str, int]]) -> str:
    return ", ".join(
        f"daphne-{i} {sum(kinds.values())} (" + " ".join(f"{k} {v}" for k, v in kinds.items()) + ")"
        for i, kinds in enumerate(kinds_per_process)
    )


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def tcp_ports() -> dict[str, tuple[int, int]]:
    """Every TCP socket of the machine by inode: (local port, remote port)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            found[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return found


def open_files_by_kind(pid: int, *, app_port: int, redis_port: int, postgres_port: int) -> dict[str, int]:
    """A process's open files: client sockets, Redis and PostgreSQL connections, and the rest."""
    ports = tcp_ports()
    kinds = {"clients": 0, "redis": 0, "postgres": 0, "other": 0}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        local, remote = ports.get(target.removeprefix("socket:[").rstrip("]"), (0, 0))
        if local == app_port and remote:
            kinds["clients"] += 1
        elif remote == redis_port:
            kinds["redis"] += 1
        elif remote == postgres_port:
            kinds["postgres"] += 1
        else:
            kinds["other"] += 1
    return kinds


class Soak:
    """The load, the checks and the figures of one soak run against a started Stack."""

    def __init__(
        self,
        stack: Stack,
        *,
        minutes: float,
        warmup: float | None = None,
        churn_rate: float = 20.0,
        chat_rate: float = 5.0,
        rooms: int = 10,
        churn_users: int = 60,
        watchers: int = 4,
        tolerance: float = 5.0,
        prime: float = 20.0,
        out=sys.stdout,
    ) -> None:
        self.stack = stack
        self.minutes = minutes
        self.warmup = min(5.0, minutes / 2) if warmup is None else warmup
        self.churn_rate = churn_rate
        self.chat_rate = chat_rate
        self.rooms = [f"soak-{n}" for n in range(rooms)]
        self.churn_users = churn_users
        self.watcher_count = watchers
        self.tolerance = tolerance
        self.prime = prime
        self.out = out
        self.started = 0.0
        # username -> that user's churn sockets that opened and that the soak has not begun to close.
        self.held: dict[str, set[ResilientClient]] = {}
        # username -> when the soak began to close their latest closed socket (or the server closed it).
        self.last_closed: dict[str, float] = {}
        self.churn_tasks: set[asyncio.Task] = set()
        self.verdict = Verdict(minutes=minutes, warmup=self.warmup)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # The stack's figures.

    def query(self, sql: str, *params) -> list[tuple]:
        import psycopg

        with psycopg.connect(f"postgresql://presence@127.0.0.1:{self.stack.postgres.port}/presence") as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def connections(self) -> int:
        return self.query("SELECT count(*) FROM presence_connection")[0][0]

    def leftover_rows(self) -> list[tuple[str, str, str]]:
        rows = self.query(
            "SELECT u.username, c.endpoint, c.opened_at FROM presence_connection c JOIN auth_user u ON u.id = c.user_id"
            " WHERE u.username LIKE 'soakchurn%%' ORDER BY c.opened_at LIMIT 20"
        )
        return [(name, endpoint, opened.isoformat()) for name, endpoint, opened in rows]

    def redis_memory(self) -> int:
        import redis

        client = redis.Redis(port=self.stack.redis.port)
        try:
            return int(client.info("memory")["used_memory"])
        finally:
            client.close()

    def pids(self) -> list[int]:
        return [process.pid for process in self.stack.apps]

    def files_by_kind(self) -> list[dict[str, int]]:
        return [
            open_files_by_kind(
                pid, app_port=port, redis_port=self.stack.redis.port, postgres_port=self.stack.postgres.port
            )
            for pid, port in zip(self.pids(), self.stack.app_ports)
        ]

    def sweep_leaves(self) -> int:
        """Users that the heartbeat's sweep sent offline, from the Daphne logs (a leave no close announced)."""
        found = 0
        for path in self.stack.directory.glob("daphne-*.log"):
            for match in re.finditer(
                r"presence sweep removed \d+ stale sockets, (\d+) users went offline", path.read_text(errors="replace")
            ):
                found += int(match.group(1))
        return found

    # The clients.

    def sessions(self, prefix: str, count: int) -> dict[str, str]:
        return json.loads(self.stack.manage("make_sessions", "--prefix", prefix, "--count", str(count), capture=True))

    def make_rooms(self) -> None:
        for slug in self.rooms:
            self.query(
                "INSERT INTO chat_room (slug, title, kind, change_seq, created_at) VALUES (%s, %s, 'public', 0, now())"
                " ON CONFLICT (slug) DO NOTHING",
                slug,
                slug,
            )

    def client(self, path: str, name: str, key: str, *, ws: str | None = None, **options) -> ResilientClient:
        return ResilientClient(ws or self.stack.ws, path, key, origin=self.stack.url, name=name, **options).start()

    async def churn_one(self, name: str, key: str, path: str, lifetime: float) -> None:
        socket = self.client(path, name, key, reconnect=False)
        try:
            await socket.wait(lambda c: c.connected or c.closed_at, 15)
        except TimeoutError:
            pass
        if not socket.opens:
            self.verdict.churn_failed += 1
            await socket.close()
            return
        self.held.setdefault(name, set()).add(socket)
        self.verdict.churn_opened += 1
        await asyncio.sleep(lifetime)
        self.held[name].discard(socket)
        closed = socket.closed_at[0] if socket.closed_at else time.monotonic()
        self.last_closed[name] = max(self.last_closed.get(name, 0.0), closed)
        await socket.close()

    async def churn(self, keys: dict[str, str], until: float) -> None:
        """Open a socket every 1/churn_rate s, each closed after 0.5–8 s; a user holds up to MAX_TABS."""
        names = list(keys)
        next_at = time.monotonic()
        while time.monotonic() < until:
            busy = {name for name, sockets in self.held.items() if len(sockets) >= MAX_TABS}
            name = random.choice([name for name in names if name not in busy] or names)
            # Three in four on the presence page, the rest in a room.
            path = "/ws/presence/" if random.random() < 0.75 else f"/ws/chat/{random.choice(self.rooms)}/"
            task = asyncio.create_task(self.churn_one(name, keys[name], path, random.uniform(0.5, 8)))
            self.churn_tasks.add(task)
            task.add_done_callback(self.churn_tasks.discard)
            next_at += 1 / self.churn_rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def chat(self, members: dict[str, list[ResilientClient]], until: float) -> None:
        everyone = [member for room in members.values() for member in room]
        serial = 0
        next_at = time.monotonic()
        while time.monotonic() < until:
            sender = random.choice(everyone)
            serial += 1
            await sender.send_message(f"soak {serial} from {sender.name}")
            next_at += 1 / self.chat_rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    # The checks.

    def check_presence(self, watchers: list[ResilientClient], users: set[str]) -> None:
        now = time.monotonic()
        for watcher in watchers:
            if not watcher.connected or now - watcher.opened_at[-1] < self.tolerance:
                continue  # a fresh view is still settling (its snapshot and the diffs after it)
            for name in users:
                open_since = None
                last_closed = self.last_closed.get(name)
                for socket in self.held.get(name, ()):
                    if socket.closed_at:  # closed by the server before its time
                        last_closed = max(last_closed or 0.0, socket.closed_at[0])
                        continue
                    since = socket.opened_at[0]
                    open_since = since if open_since is None else min(open_since, since)
                shown = name in watcher.online
                at = now - self.started
                if open_since is None and last_closed is not None and shown and now - last_closed > self.tolerance:
                    self.verdict.violations.append(Violation(at, watcher.name, name, "ghost", now - last_closed))
                if open_since is not None and not shown and now - open_since > self.tolerance:
                    self.verdict.violations.append(Violation(at, watcher.name, name, "missing", now - open_since))

    def lost_messages(self, members: dict[str, list[ResilientClient]], *, older_than: float) -> list[str]:
        """Acknowledged messages, acknowledged over older_than s ago, missing at a member open the whole time."""
        now = time.monotonic()
        lost = []
        for slug, room in members.items():
            steady = [member for member in room if member.connected and member.opens == 1]
            for sender in room:
                for message_id in sender.acked.values():
                    if now - sender.arrived.get(message_id, now) < older_than:
                        continue
                    lost += [
                        f"{slug} #{message_id} missing at {m.name}" for m in steady if message_id not in m.messages
                    ]
        return lost

    def sample(self, members: dict[str, list[ResilientClient]]) -> Sample:
        pids = self.pids()
        sample = Sample(
            at=time.monotonic() - self.started,
            rss_kib=[rss_kib(pid) for pid in pids],
            open_files=[open_files(pid) for pid in pids],
            redis_bytes=self.redis_memory(),
            connections=self.connections(),
            acked=sum(len(m.acked) for room in members.values() for m in room),
            lost=len(self.lost_messages(members, older_than=10)),
        )
        processes = " | ".join(
            f"daphne-{i} RSS {rss / 1024:.1f} MiB, {files} open files"
            for i, (rss, files) in enumerate(zip(sample.rss_kib, sample.open_files))
        )
        self.say(
            f"[{sample.at / 60:4.1f} min] {processes} | Redis {sample.redis_bytes / 2**20:.2f} MiB | "
            f"{sample.connections} Connection rows | acknowledged {sample.acked}, lost {sample.lost} | "
            f"churn {self.verdict.churn_opened} opened ({self.verdict.churn_failed} failed) | "
            f"presence violations {len(self.verdict.violations)} | sweep leaves {self.sweep_leaves()}"
        )
        self.verdict.samples.append(sample)
        return sample

    async def settle(self, baseline: list[dict[str, int]] | None, baseline_rows: int) -> tuple[list[dict], int]:
        """Wait (SETTLE_TIMEOUT at most) for open files and rows to be back at their baseline; return them."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            files = self.files_by_kind()
            rows = await asyncio.to_thread(self.connections)
            back = baseline is None or all(own_files(now) <= own_files(then) for now, then in zip(files, baseline))
            if (back and rows == baseline_rows) or time.monotonic() > deadline:
                return files, rows
            await asyncio.sleep(1)

    async def run(self) -> Verdict:
        self.make_rooms()
        chat_keys = self.sessions("soakchat", 2 * len(self.rooms))
        watcher_keys = self.sessions("soakwatch", self.watcher_count)
        churn_keys = self.sessions("soakchurn", self.churn_users)
        names = list(chat_keys)
        members = {
            slug: [self.client(f"/ws/chat/{slug}/", name, chat_keys[name]) for name in names[2 * n : 2 * n + 2]]
            for n, slug in enumerate(self.rooms)
        }
        # The watchers on each process in turn, directly: every process's diffs are checked.
        ports = self.stack.app_ports
        watchers = [
            self.client("/ws/presence/", name, key, ws=f"ws://127.0.0.1:{ports[n % len(ports)]}")
            for n, (name, key) in enumerate(watcher_keys.items())
        ]
        held = [*watchers, *(member for room in members.values() for member in room)]
        try:
            await wait_all(held, lambda c: c.connected, 60)
            steady_names = set(chat_keys) | set(watcher_keys)
            await wait_all(watchers, lambda c: steady_names <= c.online, 30)
            baseline_rows = await asyncio.to_thread(self.connections)
            # A short churn first, so that each process's database and Redis pools have grown to
            # what this load needs: open files are then compared with what they were after it.
            await self.churn(churn_keys, time.monotonic() + self.prime)
            await asyncio.gather(*self.churn_tasks)
            await self.settle(None, baseline_rows)
            baseline_files = self.files_by_kind()
            self.verdict.churn_opened = self.verdict.churn_failed = 0
            self.say(
                f"soak: {self.minutes:g} min of {self.churn_rate:g} sockets/s over {len(ports)} processes, "
                f"{self.chat_rate:g} messages/s in {len(self.rooms)} rooms, {len(watchers)} watchers; "
                f"baseline open files {describe(baseline_files)}, {baseline_rows} Connection rows; "
                f"logs in {self.stack.directory}"
            )
            self.started = time.monotonic()
            until = self.started + self.minutes * 60
            load = [
                asyncio.create_task(self.churn(churn_keys, until)),
                asyncio.create_task(self.chat(members, until)),
            ]
            warm_rss = None
            next_sample = self.started + 60
            while time.monotonic() < until:
                await asyncio.sleep(min(CHECK_INTERVAL, max(0.0, until - time.monotonic())))
                self.check_presence(watchers, set(churn_keys))
                if warm_rss is None and time.monotonic() - self.started >= self.warmup * 60:
                    warm_rss = [rss_kib(pid) for pid in self.pids()]
                if time.monotonic() >= next_sample:
                    await asyncio.to_thread(self.sample, members)
                    next_sample += 60
            await asyncio.gather(*load)
            end_rss = [rss_kib(pid) for pid in self.pids()]
            # The last churn sockets close, and their leaves are announced; the checks go on meanwhile.
            if self.churn_tasks:
                await asyncio.gather(*self.churn_tasks)
            for _ in range(3):
                await asyncio.sleep(CHECK_INTERVAL)
                self.check_presence(watchers, set(churn_keys))
            try:
                await wait_all([m for room in members.values() for m in room], lambda c: not c.pending, 30)
            except TimeoutError:
                pass  # never acknowledged, so not lost: counted apart
            self.verdict.unacked = sum(len(m.pending) for room in members.values() for m in room)
            self.verdict.lost = self.lost_messages(members, older_than=0)
            after_files, rows = await self.settle(baseline_files, baseline_rows)
            self.verdict.rss = list(zip(warm_rss or end_rss, end_rss))
            self.verdict.open_files = [
                (sum(before.values()), sum(after.values())) for before, after in zip(baseline_files, after_files)
            ]
            self.verdict.open_files_kinds = list(zip(baseline_files, after_files))
            self.verdict.connections = (baseline_rows, rows)
            self.verdict.leftover = await asyncio.to_thread(self.leftover_rows)
            self.verdict.acked = sum(len(m.acked) for room in members.values() for m in room)
            self.verdict.sweep_leaves = self.sweep_leaves()
            await asyncio.to_thread(self.sample, members)
        finally:
            await asyncio.gather(*(c.close() for c in held))
        return self.verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30, help="length of the load (default 30)")
    parser.add_argument("--warmup", type=float, default=None, help="minutes before RSS is compared (default 5)")
    parser.add_argument("--churn-rate", type=float, default=20, help="sockets opened (and closed) a second")
    parser.add_argument("--chat-rate", type=float, default=5, help="chat messages a second, over all rooms")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs) afterwards")
    args = parser.parse_args()
    stack = Stack(processes=2)
    stack.keep = args.keep
    with stack:
        verdict = asyncio.run(
            Soak(
                stack, minutes=args.minutes, warmup=args.warmup, churn_rate=args.churn_rate, chat_rate=args.chat_rate
            ).run()
        )
    print(verdict.report(), flush=True)
    sys.exit(1 if verdict.failures() else 0)


if __name__ == "__main__":
    main()
