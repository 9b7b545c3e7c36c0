"""`rundemo [ADDRPORT]`: the embedded demo's single process, the engine's tick in a thread plus runserver.

Without Redis there is no Celery beat, so a daemon thread runs `nurture.engine.tick()` every
NURTURE_TICK_SECONDS; the site is served by Django's development server without the autoreloader
(a reloader would start a second scheduler in its child process). Ctrl-C stops both.
"""

import logging
import threading

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import close_old_connections, connection

from nurture.engine import tick

logger = logging.getLogger(__name__)


def scheduler_run(*, stop: threading.Event, interval: float) -> None:
    """Tick now and then every `interval` seconds until `stop` is set; a failing tick is logged, not fatal."""
    ticked = False
    while not stop.is_set():
        close_old_connections()
        try:
            tick()
        except Exception:
            logger.exception("demo scheduler: tick failed; the next one runs in %ss", interval)
        else:
            if not ticked:
                logger.info("demo scheduler: first tick done; the next ones run every %ss", interval)
            ticked = True
        finally:
            close_old_connections()
        stop.wait(interval)
    connection.close()


class Command(BaseCommand):
    help = "Serve the site like `runserver ADDRPORT --noreload` with the engine's tick running in-process."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000", help="host:port to serve on")

    def handle(self, *args, **options):
        stop = threading.Event()
        scheduler = None
        if settings.NURTURE_INPROCESS_SCHEDULER:
            interval = settings.NURTURE_TICK_SECONDS
            scheduler = threading.Thread(
                target=scheduler_run,
                kwargs={"stop": stop, "interval": interval},
                name="demo-scheduler",
                daemon=True,
            )
            scheduler.start()
            self.stdout.write(f"Scheduler running in-process: one engine tick every {interval}s.")
        else:
            self.stdout.write("NURTURE_INPROCESS_SCHEDULER is off: Celery beat is expected to run the tick.")
        try:
            # The demo serves /static/ itself, whether or not DEBUG is on.
            call_command(
                "runserver",
                options["addrport"],
                use_reloader=False,
                use_static_handler=True,
                insecure_serving=True,
            )
        finally:
            stop.set()
            if scheduler is not None:
                scheduler.join(timeout=5)
