import json
import logging

import pytest
from django.contrib.auth import get_user_model

from presence_site import settings as site
from presence_site.logs import JsonFormatter
from presence_site.testing import RedisServer


def test_healthz_answers_without_touching_anything(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"


@pytest.mark.django_db
@pytest.mark.usefixtures("layer")
def test_readyz_is_ok_when_the_database_and_layer_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "failing": [], "checks": {"database": "ok", "channel_layer": "ok"}}


@pytest.mark.django_db
def test_readyz_names_the_channel_layer_when_redis_is_down(client, settings, tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    settings.CHANNEL_LAYERS = site.redis_channel_layers(redis.url)
    assert client.get("/readyz").status_code == 200
    redis.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["channel_layer"] and body["checks"]["database"] == "ok"
    redis.start()  # same port: recovers without a restart of anything else
    assert client.get("/readyz").status_code == 200
    redis.stop()


@pytest.mark.django_db
def test_metrics_for_allowed_networks_and_staff_only(client, settings, make_user):
    response = client.get("/metrics")  # the test client comes from 127.0.0.1
    assert response.status_code == 200
    text = response.content.decode()
    for name in (
        "presence_online_users",
        "presence_open_sockets",
        "presence_frames_refused_total",
        "presence_sweep_runs_total",
        "chat_messages_stored_total",
        "presence_channel_layer_errors_total",
    ):
        assert name in text
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403
    client.force_login(make_user("alice"))
    assert client.get("/metrics").status_code == 403
    client.force_login(get_user_model().objects.create_user("root", password="x", is_staff=True))
    assert client.get("/metrics").status_code == 200


def test_json_log_lines_carry_extra_fields():
    record = logging.LogRecord("realtime.sockets", logging.INFO, __file__, 1, "socket %s", ("closed",), None)
    record.user = "alice"
    record.code = 4000
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "socket closed" and line["user"] == "alice" and line["code"] == 4000
    assert line["level"] == "INFO" and line["time"].endswith("Z")
