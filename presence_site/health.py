"""/healthz, /readyz and /metrics: what a load balancer and Prometheus ask."""

import asyncio
import ipaddress
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import realtime.metrics  # noqa: F401  (registers the transport metrics; the apps register theirs when ready)

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0


def healthz(request: HttpRequest) -> HttpResponse:
    """200 while the process serves, whatever Redis or the database do."""
    return HttpResponse("ok\n", content_type="text/plain")


def _database_answers() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


async def _check_database() -> str | None:
    try:
        await asyncio.wait_for(sync_to_async(_database_answers, thread_sensitive=False)(), CHECK_TIMEOUT)
    except Exception as error:
        return f"{type(error).__name__}"
    return None


async def _check_channel_layer() -> str | None:
    layer = get_channel_layer()
    try:
        # The default prefix: channels-redis pops one list per prefix under a
        # per-process lock that an open socket's receive holds, so a channel
        # of its own prefix would never be read on a process with sockets.
        channel = await asyncio.wait_for(layer.new_channel(), CHECK_TIMEOUT)
        await asyncio.wait_for(layer.send(channel, {"type": "readyz.probe"}), CHECK_TIMEOUT)
        await asyncio.wait_for(layer.receive(channel), CHECK_TIMEOUT)
    except Exception as error:
        return f"{type(error).__name__}"
    return None


async def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the database and the channel layer answer; else 503 naming what failed."""
    database, layer = await asyncio.gather(_check_database(), _check_channel_layer())
    checks = {"database": database or "ok", "channel_layer": layer or "ok"}
    failing = [name for name, problem in (("database", database), ("channel_layer", layer)) if problem]
    if failing:
        logger.warning("not ready: %s", ", ".join(f"{name} ({checks[name]})" for name in failing))
        return JsonResponse({"status": "unavailable", "failing": failing, "checks": checks}, status=503)
    return JsonResponse({"status": "ok", "failing": [], "checks": checks})


def _allowed_address(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text, for staff sessions and the networks in METRICS_ALLOWED_NETWORKS."""
    # The address first: it needs no database, so a scrape works while the database is down.
    allowed = _allowed_address(request.META.get("REMOTE_ADDR")) or (
        request.user.is_authenticated and request.user.is_staff
    )
    if not allowed:
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
