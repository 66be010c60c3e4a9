"""The deployment's periodic bookkeeping: each job is declared on every process and run by one at a time.

Every process's runtime (realtime.runtime) runs these jobs once it has a
socket; a round first takes the job's lease (activity.services.lease_take, a
row in the database, so that it holds across processes on SQLite and
PostgreSQL alike) and does nothing when another process holds it. A process
that holds no socket runs no job: one that does is enough.
"""

import logging
import time

from channels.db import database_sync_to_async
from django.conf import settings

from accounts.services import sessions_clear_ended
from activity.services import activity_prune, activity_roll_up, lease_take, online_sample_take
from realtime.runtime import SERVER_ID, Runtime, periodic

logger = logging.getLogger(__name__)

SAMPLE_LEASE = "activity.sample"
HOUSEKEEPING_LEASE = "activity.housekeeping"
# A holder that stops renewing is replaced this many intervals after its last round.
LEASE_INTERVALS = 1.5


def until_next_minute() -> float:
    """Seconds to just past the start of the next minute, so that rounds fall in consecutive minutes."""
    return 60.0 - time.time() % 60.0 + 0.5


def sample_round() -> int | None:
    """The online count recorded this minute, or None when another process holds the lease."""
    if not lease_take(name=SAMPLE_LEASE, holder=SERVER_ID, seconds=60.0 * LEASE_INTERVALS):
        return None
    return online_sample_take()


def housekeeping_round() -> bool:
    """Clear ended sessions, roll up closed days, prune old rows; False when another process holds the lease."""
    if not lease_take(
        name=HOUSEKEEPING_LEASE, holder=SERVER_ID, seconds=settings.HOUSEKEEPING_INTERVAL * LEASE_INTERVALS
    ):
        return False
    records = sessions_clear_ended()
    days = activity_roll_up()
    pruned = activity_prune()
    if records or days or pruned:
        logger.info(
            "housekeeping: %d records of ended sessions, %d days rolled up, %d old rows pruned", records, days, pruned
        )
    return True


@periodic(interval=until_next_minute)
async def sample(runtime: Runtime) -> None:
    """Record how many users are online, once a minute for the whole deployment."""
    await database_sync_to_async(sample_round)()


@periodic(interval=lambda: settings.HOUSEKEEPING_INTERVAL)
async def housekeeping(runtime: Runtime) -> None:
    """Clear ended sessions and keep the activity tables, every HOUSEKEEPING_INTERVAL for the whole deployment."""
    await database_sync_to_async(housekeeping_round)()
