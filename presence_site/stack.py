"""The production shape on one machine, from Debian packages: Redis, PostgreSQL, Daphne × N, nginx.

    python -m presence_site.stack            # what `make stack` runs; Ctrl-C stops it all
    python -m presence_site.stack --port 8080 --processes 3

The fault tests drive the same class: they stop, pause and restart its parts.
Everything lives in one temporary folder and listens on loopback only.
"""

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = BASE_DIR / "deploy" / "nginx" / "presence.conf.template"
NGINX_MAIN_TEMPLATE = BASE_DIR / "deploy" / "nginx" / "stack-nginx.conf.template"
# 64 KiB bounds what a client can make Daphne buffer; autobahn would apply it
# to what the server sends too, which realtime.daphne_compat lifts.
DAPHNE_FLAGS = [
    "--websocket_timeout",
    "86400",
    "--ping-interval",
    "20",
    "--ping-timeout",
    "30",
    "--websocket-max-message-size",
    "65536",
    "--proxy-headers",
]


def daphne_command(port: int, flags: list[str] = DAPHNE_FLAGS) -> list[str]:
    """Daphne serving the app on 127.0.0.1:port with the given flags (the production ones by default)."""
    return [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        *flags,
        "presence_site.asgi:application",
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, *, process: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port, or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


# Seconds a Daphne process gets after SIGTERM before SIGKILL: its drain (SHUTDOWN_DRAIN, 5 s by
# default) and the work it still holds (realtime.runtime.Runtime.shutdown waits up to 10 s more).
APP_STOP_TIMEOUT = 20.0


def stop_process(process: subprocess.Popen, *, timeout: float = 10.0) -> None:
    if process.poll() is None:
        if _stopped(process.pid):
            os.kill(process.pid, signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("T")
    except (OSError, IndexError):
        return False


def render(template: Path, values: dict[str, str]) -> str:
    """Fill ${NAME} for the given names only; nginx's own $variables stay as they are."""
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    return text


class RedisServer:
    """A private redis-server on a port of its own, which can be stopped, paused and started again."""

    def __init__(self, directory: Path, port: int | None = None, *, extra: list[str] | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra or []
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / f"redis-{self.port}.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port stays open and nothing answers, as with a hung server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class PostgresCluster:
    """A private PostgreSQL cluster from Debian's packages, on a free port, trust auth, owned by `postgres`."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
        if not found:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = found[-1].parent
        self.directory = directory
        self.port = port or free_port()
        self.data = directory / "pgdata"
        # initdb and postgres refuse to run as root.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgres://presence@127.0.0.1:{self.port}/presence"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_owner, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.as_owner:
            shutil.chown(self.directory, "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "presence",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        self.start()
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "presence", "presence"],
            check=True,
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "postgres.log"),
            "-w",
            "-t",
            "30",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        subprocess.run(
            [*self.as_owner, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def running(self) -> bool:
        status = subprocess.run(
            [*self.as_owner, str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return status.returncode == 0


class Stack:
    """Redis, PostgreSQL, N Daphne processes and nginx in front, on loopback."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        processes: int = 2,
        port: int | None = None,
        env: dict[str, str] | None = None,
        ping: tuple[float, float] | None = None,
    ) -> None:
        self.directory = Path(directory or tempfile.mkdtemp(prefix="presence-stack-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        # PostgreSQL runs as `postgres` and nginx's workers as `nobody` when started by root.
        self.directory.chmod(0o755)
        self.redis = RedisServer(self.directory / "redis")
        self.postgres = PostgresCluster(self.directory / "postgres")
        self.app_ports = [free_port() for _ in range(processes)]
        self.apps: list[subprocess.Popen | None] = [None] * processes
        self.port = port or free_port()
        self.nginx: subprocess.Popen | None = None
        self.extra_env = env or {}
        # (interval, timeout) for Daphne's keepalive pings; the fault tests shorten them.
        self.ping = ping
        self.keep = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The production environment every Django process of the stack gets."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "DJANGO_"))}
        env.update(
            DJANGO_SETTINGS_MODULE="presence_site.settings",
            DEBUG="0",
            SECRET_KEY=self._secret(),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SECURE_SSL_REDIRECT="0",
            REDIS_URL=self.redis.url,
            DATABASE_URL=self.postgres.url,
            STATIC_ROOT=str(self.directory / "static"),
            LOG_FORMAT="json",
        )
        env.update(self.extra_env)
        return env

    def _secret(self) -> str:
        path = self.directory / "secret_key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(50))
        return path.read_text()

    def manage(self, *args: str, capture: bool = False) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env(),
            check=True,
            capture_output=capture,
            text=True,
        )
        return result.stdout if capture else ""

    def start(self) -> "Stack":
        self.redis.start()
        self.postgres.init()
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("collectstatic", "--noinput", "-v", "0")
        for index in range(len(self.apps)):
            self.start_app(index)
        self.start_nginx()
        return self

    def daphne_flags(self) -> list[str]:
        """The production flags, with the ping interval and timeout given to the stack, if any."""
        flags = list(DAPHNE_FLAGS)
        if self.ping is not None:
            flags[flags.index("--ping-interval") + 1] = f"{self.ping[0]:g}"
            flags[flags.index("--ping-timeout") + 1] = f"{self.ping[1]:g}"
        return flags

    def start_app(self, index: int) -> None:
        log = open(self.directory / f"daphne-{index}.log", "ab")
        process = subprocess.Popen(
            daphne_command(self.app_ports[index], self.daphne_flags()),
            cwd=BASE_DIR,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.apps[index] = process
        wait_for_port(self.app_ports[index], process=process, timeout=30)

    def stop_app(self, index: int) -> None:
        """SIGTERM, as a deploy does: the process drains its sockets (1012) and exits 0."""
        process = self.apps[index]
        if process is not None:
            stop_process(process, timeout=APP_STOP_TIMEOUT)
            self.apps[index] = None

    def restart_app(self, index: int) -> int:
        """Stop one app process gracefully and start it again on the same port; return its exit code."""
        process = self.apps[index]
        self.stop_app(index)
        self.start_app(index)
        return process.returncode if process is not None else 0

    def kill_app(self, index: int) -> None:
        """kill -9: no close frames, no disconnect handlers."""
        process = self.apps[index]
        if process is not None:
            process.kill()
            process.wait(timeout=10)
            self.apps[index] = None

    def start_nginx(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        values = {
            "APP_1": f"127.0.0.1:{self.app_ports[0]}",
            "APP_2": f"127.0.0.1:{self.app_ports[1 % len(self.app_ports)]}",
            "NGINX_PORT": f"127.0.0.1:{self.port}",
            "STACK_DIR": str(self.directory),
        }
        site = render(NGINX_TEMPLATE, values)
        # More than two processes: list the others beside the first two, in each upstream.
        second = f"    server {values['APP_2']} max_fails=0;\n"
        extra = "".join(f"    server 127.0.0.1:{port} max_fails=0;\n" for port in self.app_ports[2:])
        site = site.replace(second, second + extra)
        (self.directory / "presence.conf").write_text(site)
        (self.directory / "nginx.conf").write_text(render(NGINX_MAIN_TEMPLATE, values))
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            temp = self.directory / f"nginx-{name}"
            temp.mkdir(exist_ok=True)
            temp.chmod(0o777)
        log = open(self.directory / "nginx.log", "ab")
        self.nginx = subprocess.Popen(
            [binary, "-c", str(self.directory / "nginx.conf"), "-e", str(self.directory / "nginx-error.log")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.port, process=self.nginx)

    def stop(self) -> None:
        if self.nginx is not None:
            stop_process(self.nginx)
            self.nginx = None
        for index, process in enumerate(self.apps):
            if process is not None:
                stop_process(process, timeout=APP_STOP_TIMEOUT)
                self.apps[index] = None
        self.redis.stop()
        self.postgres.stop()

    def __enter__(self) -> "Stack":
        """Started; whatever part fails to start, the parts already running are stopped."""
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        """Every process stopped and the folder removed, unless `keep` was set (its logs are wanted)."""
        self.stop()
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1 (default 8080)")
    parser.add_argument("--processes", type=int, default=2, help="Daphne processes behind nginx (default 2)")
    args = parser.parse_args()
    stack = Stack(processes=args.processes, port=args.port)

    def interrupt(signum, frame) -> None:
        # Once: a second signal must not cut the clean-up short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        with stack:
            print(f"\n  Presence (production shape) is at {stack.url}/", flush=True)
            print(
                f"  Redis {stack.redis.url}, PostgreSQL {stack.postgres.url}, Daphne on ports "
                f"{', '.join(map(str, stack.app_ports))}; logs in {stack.directory}",
                flush=True,
            )
            print(
                "  Make an admin: DATABASE_URL=" + stack.postgres.url + " .venv/bin/python manage.py createsuperuser",
                flush=True,
            )
            print("  Ctrl-C stops everything.\n", flush=True)
            while all(p is not None and p.poll() is None for p in [*stack.apps, stack.nginx]):
                time.sleep(1)
            print("a process of the stack exited; stopping the rest", file=sys.stderr)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
