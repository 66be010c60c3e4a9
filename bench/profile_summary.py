"""Summarize a py-spy raw profile (collapsed stacks): where the server's time went.

Run: .venv/bin/python bench/profile_summary.py var/bench-*/profile-<system>-1p.txt [TOP]
"""

import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


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


def summarize(path: Path, top: int = 25) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [short(f) for f in stack.split(";")]
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
    print("\nself time")
    for name, share in own:
        print(f"  {share:5.1f}%  {name}")
    print("\ninclusive time")
    for name, share in inclusive:
        print(f"  {share:5.1f}%  {name}")


if __name__ == "__main__":
    main()
