"""Delete expired sessions (Django's clearsessions) and the logged-in records of every session that ended.

Every Daphne process runs this clean-up hourly on its own (one process at a
time, see activity/jobs.py); the command is for a deployment that wants it
from cron instead, or now:

    manage.py clear_ended_sessions
"""

from django.core.management.base import BaseCommand

from accounts.services import sessions_clear_ended


class Command(BaseCommand):
    help = __doc__.split("\n\n")[0]

    def handle(self, *args, **options) -> None:
        records = sessions_clear_ended()
        self.stdout.write(f"Expired sessions cleared; {records} logged-in records of ended sessions deleted.")
