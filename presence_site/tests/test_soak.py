"""A two-minute soak of the production shape (presence_site.soak), at a load the shared 2-core machine holds.

`make soak` runs the same code for 30 minutes at the full rates (docs/faults.md).
"""

import pytest

from presence_site.soak import RSS_GROWTH_LIMIT, Soak, own_files
from presence_site.stack import Stack

pytestmark = [pytest.mark.fault, pytest.mark.timeout(360)]

# A short heartbeat, as in the other fault tests: the sweep looks for missed leaves every second.
STACK_ENV = {"PRESENCE_TTL": "6", "PRESENCE_HEARTBEAT_INTERVAL": "1", "PRESENCE_LEAVE_GRACE": "1.5"}


@pytest.fixture(scope="module")
def soak_stack():
    with Stack(processes=2, env=STACK_ENV) as stack:
        yield stack


async def test_two_minutes_of_churn_chat_and_watchers(soak_stack):
    """Memory flat after the warm-up, files and rows back, no acknowledged message lost, presence always right."""
    soak = Soak(
        soak_stack, minutes=2, warmup=0.5, churn_rate=3, chat_rate=2, rooms=4, churn_users=30, watchers=2, prime=10
    )
    verdict = await soak.run()
    print("\n" + verdict.report(), flush=True)

    assert verdict.churn_opened > 300, f"the churn opened only {verdict.churn_opened} sockets"
    for index, (before, after) in enumerate(verdict.rss):
        growth = (after - before) / before
        assert growth < RSS_GROWTH_LIMIT, (
            f"daphne-{index} RSS grew {growth:.1%} after the warm-up ({before} → {after} KiB)"
        )
    for index, (before, after) in enumerate(verdict.open_files_kinds):
        # The database and Redis pools keep their connections for reuse: the rest must be back.
        assert own_files(after) <= own_files(before), (
            f"daphne-{index} holds more open files after the churn than before it: {before} → {after}"
        )
    assert verdict.connections[1] == verdict.connections[0], (
        f"{verdict.connections[1]} Connection rows after the churn, {verdict.connections[0]} before it: "
        f"{verdict.leftover[:5]}"
    )
    assert verdict.acked > 100
    assert verdict.unacked == 0, f"{verdict.unacked} chat messages were never acknowledged"
    assert not verdict.lost, f"{len(verdict.lost)} acknowledged messages never reached a member: {verdict.lost[:5]}"
    assert not verdict.violations, "watchers showed users in the wrong state: " + "; ".join(
        map(str, verdict.violations[:5])
    )
    assert verdict.sweep_leaves == 0, (
        f"the heartbeat's sweep found {verdict.sweep_leaves} users online with no socket (missed leaves)"
    )
