from django.core.management.base import BaseCommand, CommandError
from django.utils.timezone import now as timezone_now

from nurture.management.commands.tick import parse_now
from sequences.models import Sequence
from sequences.simulate import sequence_simulate


class Command(BaseCommand):
    help = (
        "Print, for a sample of current leads, what a sequence would send on which local date and why, "
        "without sending or saving anything."
    )

    def add_arguments(self, parser):
        parser.add_argument("sequence_id", type=int)
        parser.add_argument("--days", type=int, default=30, help="how many days ahead (default 30)")
        parser.add_argument(
            "--lead", type=int, action="append", dest="leads", help="a lead id (repeat for more)"
        )
        parser.add_argument("--sample", type=int, default=20, help="leads in the sample (default 20)")
        parser.add_argument("--now", help="ISO 8601 instant to simulate from; naive values are in TIME_ZONE")

    def handle(self, *args, **options):
        sequence = Sequence.objects.filter(pk=options["sequence_id"]).first()
        if sequence is None:
            raise CommandError(f"no sequence {options['sequence_id']}")
        if options["days"] < 1:
            raise CommandError("--days must be at least 1")
        now = parse_now(options["now"]) if options["now"] else timezone_now()
        results = sequence_simulate(
            sequence=sequence,
            days=options["days"],
            now=now,
            lead_ids=options["leads"],
            sample=options["sample"],
        )
        self.stdout.write(
            f"sequence #{sequence.pk} {sequence.name} ({sequence.timezone}), {options['days']} days"
        )
        if not results:
            self.stdout.write("no leads to simulate")
        for result in results:
            self.stdout.write(f"lead #{result.lead.pk} {result.lead.name}")
            for note in result.notes:
                self.stdout.write(f"  ({note})")
            for step in result.steps:
                self.stdout.write(f"  {step.line()}")
            if result.ending:
                self.stdout.write(f"  ({result.ending})")
