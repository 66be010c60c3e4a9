"""Summarize a py-spy raw profile (collapsed stacks): where the server's time went.

Run: .venv/bin/python bench/profile_summary.py var/bench-*/profile-<system>-1p.txt [TOP]

A profile recorded with py-spy's --threads (the handshake storm's) starts each stack with its thread,
"thread (<id>): <name>": the summary then also gives each thread's share and its own self time, so the event
loop's thread (MainThread), the database's (asgiref's ThreadPoolExecutor) and the rounds' (realtime/batch.py)
read apart.
"""

import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
THREAD = re.compile(r"^thread \(\w+\)(?:: (?P<name>.*))?$")


def short(frame: str) -> str:
    """'send (websockets/asyncio/connection.py:123)' -> 'websockets/asyncio/connection.py:send'."""
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "wt-bench/", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{match['func']}"


def thread_name(frame: str) -> str | None:
    """The thread a --threads stack starts with, its id left out (a pool's threads sum up by name), or None."""
    match = THREAD.match(frame)
    if not match:
        return None
    return re.sub(r"_\d+$", "", match["name"] or "thread")


def stacks(path: Path):
    """Each (frames, samples) of a raw profile, frames outermost first."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def by_thread(path: Path, top: int = 10) -> tuple[int, list[tuple[str, float, list[tuple[str, float]]]]]:
    """Each thread's share of the samples, with its top self time (as shares of all samples)."""
    shares: Counter[str] = Counter()
    own: dict[str, Counter[str]] = {}
    total = 0
    for frames, n in stacks(path):
        total += n
        name = thread_name(frames[0])
        if name is None:
            continue
        shares[name] += n
        own.setdefault(name, Counter())[short(frames[-1])] += n
    return total, [
        (name, 100 * n / total, [(f, 100 * c / total) for f, c in own[name].most_common(top)])
        for name, n in shares.most_common()
    ]


def summarize(path: Path, top: int = 25) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for raw, n in stacks(path):
        total += n
        frames = [short(f) for f in raw]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    as_share = lambda c: [(name, 100 * n / total) for name, n in c.most_common(top)]  # noqa: E731
    return total, as_share(own), as_share(inclusive)


def main() -> None:
    path = Path(sys.argv[1])
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    total, own, inclusive = summarize(path, top)
    print(f"{path.name}: {total} samples")
    _, threads = by_thread(path, min(top, 15))
    for name, share, own_in_thread in threads:
        print(f"\nthread {name}: {share:.1f}% of the samples; its self time")
        for frame, frame_share in own_in_thread:
            print(f"  {frame_share:5.1f}%  {frame}")
    print("\nself time")
    for name, share in own:
        print(f"  {share:5.1f}%  {name}")
    print("\ninclusive time")
    for name, share in inclusive:
        print(f"  {share:5.1f}%  {name}")


if __name__ == "__main__":
    main()
