"""The deployment files: nginx config valid, compose file complete, Daphne flags consistent."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from presence_site.stack import NGINX_MAIN_TEMPLATE, NGINX_TEMPLATE, render

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def test_nginx_config_is_valid(tmp_path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed (apt-get install nginx): the deployment config can't be checked")
    values = {
        "APP_1": "127.0.0.1:9001",
        "APP_2": "127.0.0.1:9002",
        "NGINX_PORT": "127.0.0.1:9000",
        "STACK_DIR": str(tmp_path),
    }
    (tmp_path / "presence.conf").write_text(render(NGINX_TEMPLATE, values))
    (tmp_path / "nginx.conf").write_text(render(NGINX_MAIN_TEMPLATE, values))
    result = subprocess.run(
        [nginx, "-t", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_nginx_config_upgrades_websockets_and_fills_only_its_own_names():
    text = NGINX_TEMPLATE.read_text()
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in text
    assert "proxy_read_timeout 1h;" in text
    rendered = render(NGINX_TEMPLATE, {"APP_1": "a:1", "APP_2": "b:2", "NGINX_PORT": "80"})
    assert "${" not in rendered and "$http_upgrade" in rendered


def test_compose_file_names_the_production_services():
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "migrate", "app1", "app2", "nginx"} <= set(services)
    assert "pgdata" in compose["volumes"]
    assert any("pgdata:" in volume for volume in services["postgres"]["volumes"])
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("app1", "app2"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("redis", "postgres", "app1", "app2", "nginx"):
        assert services[name]["healthcheck"]["test"], name
    template = "./deploy/nginx/presence.conf.template:/etc/nginx/templates/default.conf.template:ro"
    assert template in services["nginx"]["volumes"]
    env = services["app1"]["environment"]
    assert env["WEBSOCKET_TIMEOUT"] == env["CHANNEL_GROUP_EXPIRY"]
    # A restart drains first: SIGTERM reaches Daphne itself (PID 1), with time for the drain.
    assert services["app1"]["stop_grace_period"] == "20s"
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert "STOPSIGNAL SIGTERM" in dockerfile and '"exec daphne' in dockerfile


def test_every_run_command_passes_the_production_daphne_flags():
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    makefile = (BASE_DIR / "Makefile").read_text()
    stack = (BASE_DIR / "presence_site" / "stack.py").read_text()
    for text in (dockerfile, makefile, stack):
        # Both directions: room for the largest frame the server sends (a big snapshot or history).
        assert "--websocket-max-message-size" in text and "65536" in text
        assert "--ping-interval" in text and "--ping-timeout" in text
        assert "--websocket_timeout" in text
    assert "--proxy-headers" in dockerfile and "--proxy-headers" in stack
