from django.core.management.base import BaseCommand, CommandError

from leads.auth import api_key_create
from leads.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="a name that says who uses the key, e.g. crm-sync")
        parser.add_argument(
            "--scopes", default="read,write", help="comma-separated: read, write (default both)"
        )

    def handle(self, *args, **options):
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        if ApiKey.objects.filter(name=options["name"]).exists():
            raise CommandError(f"an API key named {options['name']!r} already exists")
        try:
            key, plain = api_key_create(name=options["name"], scopes=scopes)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(
            f"API key {key.name!r} with scopes {','.join(key.scopes)} (shown once, store it now):"
        )
        self.stdout.write(plain)
