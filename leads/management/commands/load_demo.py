import time

from django.core.management.base import BaseCommand
from django.db import connection
from django.utils.timezone import now as timezone_now

from leads.demo import demo_load


class Command(BaseCommand):
    help = (
        "Load the demo data set (users, ~2,000 leads, 90 days of events) into the configured database; "
        "running it again adds nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--seed", type=int, default=2026, help="seed of the generated data (default 2026)"
        )

    def handle(self, *args, **options):
        database = connection.settings_dict
        self.stdout.write(f"Loading the demo data set into {connection.vendor} {database['NAME']} ...")
        started = time.monotonic()
        counts = demo_load(now=timezone_now(), seed=options["seed"])
        width = max(map(len, counts), default=0)
        for name, value in counts.items():
            self.stdout.write(f"  {name:<{width}}  {value:>7}")
        self.stdout.write(
            self.style.SUCCESS(f"Demo data loaded in {time.monotonic() - started:.1f}s.")
            + " Log in at /admin/ as marketer, sdr1, sdr2 or manager with password demo-pass-123;"
            " the SDR workspace is at /workspace/ for sdr1, sdr2 and manager."
        )
