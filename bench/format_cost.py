"""Server CPU that formatting adds to each stored message: markdown-it-py + nh3 against the rest of message_post.

    .venv/bin/python bench/format_cost.py [--messages 2000]

Prints the CPU time (time.process_time, this process only) of chat.formatting.message_html on typical
bodies, and of chat.services.message_post with formatting and with it replaced by a no-op, on a
throw-away SQLite database in a temporary folder.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")

BODIES = [
    "ok",
    "see you at 10",
    "Morning! The new presence page is up on staging.",
    "Looks **great**. The away dot reads well at _small_ sizes, see https://example.com/shots/1",
    "Next: the room page. Reconnects now resume where they left off,\nso nothing is lost or shown twice.",
    "```\ndef f(x):\n    return x * 2\n```\nthat should do it",
    "> quoted line\n\n- one\n- two\n- three `code` here",
]


def cpu_per_call(call, runs: int) -> float:
    start = time.process_time()
    for i in range(runs):
        call(i)
    return (time.process_time() - start) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="format-cost-")
    os.environ["SQLITE_PATH"] = str(Path(folder) / "db.sqlite3")

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    settings.CHAT_RATE_BURST = 10**9
    call_command("migrate", verbosity=0)
    from chat import formatting, services
    from chat.models import Room

    render = cpu_per_call(lambda i: formatting.message_html(BODIES[i % len(BODIES)]), args.messages * 5)
    print(f"message_html alone: {render:.1f} µs CPU per body (mean over {len(BODIES)} typical bodies)")
    for body in BODIES:
        print(f"  {cpu_per_call(lambda i, body=body: formatting.message_html(body), 2000):7.1f} µs  {body[:50]!r}")

    user = get_user_model().objects.create(username="bench")
    room = Room.objects.create(slug="bench", title="bench")

    def post(i: int) -> None:
        services.message_post(room=room, user=user, body=BODIES[i % len(BODIES)])

    post(0)
    original = services.message_html
    with_runs, without_runs = [], []
    # Alternated, so that a busy moment of a shared machine, or the table's growth, does not favour either.
    for _ in range(3):
        with_runs.append(cpu_per_call(post, args.messages // 3))
        services.message_html = lambda body: ""
        try:
            without_runs.append(cpu_per_call(post, args.messages // 3))
        finally:
            services.message_html = original
    with_formatting, without = min(with_runs), min(without_runs)
    print(f"message_post on SQLite (best of 3): {with_formatting:.0f} µs CPU with formatting, {without:.0f} µs without")
    print(f"formatting adds {with_formatting - without:.0f} µs, {100 * (with_formatting - without) / without:.0f}%")


if __name__ == "__main__":
    main()
