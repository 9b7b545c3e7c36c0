from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, make_aware

from nurture.engine import tick


def parse_now(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(f"--now {value!r} is not an ISO 8601 date-time")
    return make_aware(parsed) if is_naive(parsed) else parsed


class Command(BaseCommand):
    help = "Run one full engine cycle synchronously, as of --now (default: the real clock)."

    def add_arguments(self, parser):
        parser.add_argument("--now", help="ISO 8601 instant; naive values are in TIME_ZONE")

    def handle(self, *args, **options):
        now = parse_now(options["now"]) if options["now"] else None
        report = tick(now=now)
        self.stdout.write(f"tick {report.now.isoformat()} {report.seconds:.3f}s")
        for name, counts in report.steps.items():
            summary = " ".join(f"{key}={value}" for key, value in counts.items()) or "-"
            self.stdout.write(f"  {name}: {summary}")
