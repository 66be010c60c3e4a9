"""What realtime.daphne_compat relies on in Daphne, autobahn and Twisted, so that an upgrade cannot break it silently.

Three layers. The upstream code the patch wraps or mirrors is pinned by the
hash of its source, so any change to it is read before it ships. The calls the
wrappers make are checked against upstream signatures, and write_now against a
real Twisted TCP transport. And a real Daphne serves a bare app
(realtime/tests/daphne_app.py) with the patch and without it: with it, the
app's close codes, large frames and bursts reach a client intact; without it,
Daphne still fails them, which is why the patch exists.
"""

import asyncio
import collections
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import pprint
import socket
import subprocess
import sys
import textwrap
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
from twisted.internet import error, tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python import failure
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from presence_site.stack import BASE_DIR, DAPHNE_FLAGS, daphne_command, free_port, stop_process, wait_for_port
from realtime import daphne_compat
from realtime.tests.daphne_app import burst_frame

DAPHNE_PROTOCOL = "daphne.ws_protocol:WebSocketProtocol"
AUTOBAHN_PROTOCOL = "autobahn.websocket.protocol:WebSocketProtocol"
AUTOBAHN_TIMINGS = "autobahn.websocket.protocol:Timings"


@dataclass(frozen=True)
class Pin:
    distribution: str
    version: str  # the version the source was read from
    owner: str  # "module:Class" that defines the function
    name: str
    sha256: str  # of the dedented inspect.getsource()
    relied_on: str  # what realtime/daphne_compat.py takes from it


PINS = [
    Pin(
        "daphne",
        "4.2.3",
        DAPHNE_PROTOCOL,
        "serverClose",
        "343e598cb17d97cd4c1fb8a780b9a413fb20c4f93b7e8fa51a303d74dd8999fb",
        "the serverClose wrapper replaces it and calls it as serverClose(self, code=code) for the codes it leaves "
        "to Daphne; it must still take only a code (if it now takes a reason, the wrapper must take and pass it)",
    ),
    Pin(
        "daphne",
        "4.2.3",
        DAPHNE_PROTOCOL,
        "handle_reply",
        "f750e4ea30241e8f33a7eb4fc1c37e783c24ac212651c155ad8d5ca6aca87439",
        "an app's websocket.close reaches serverClose(code=...) here, and only once the socket is open "
        "(before that Daphne rejects the handshake, so sendCloseFrame never sees a connecting socket)",
    ),
    Pin(
        "daphne",
        "4.2.3",
        DAPHNE_PROTOCOL,
        "serverSend",
        "7ad2b1f417d5b2796ef7d974071c6422fa155067a0c2185d04867e7828291abd",
        "an app's frames go out through sendMessage(payload, isBinary), the call whose outgoing limit the "
        "sendMessage wrapper lifts",
    ),
    Pin(
        "autobahn",
        "26.11.1",
        AUTOBAHN_PROTOCOL,
        "sendClose",
        "340f16c9bc644ce45120e266b0ac35dee938bcd3c7c6dd571a51a313c449033a",
        "it refuses codes other than 1000 and 3000-4999, which is why serverClose sends STANDARD_CLOSE_CODES "
        "through sendCloseFrame; if it now takes them, that part of the patch can go",
    ),
    Pin(
        "autobahn",
        "26.11.1",
        AUTOBAHN_PROTOCOL,
        "sendCloseFrame",
        "36a2daf270f8a7aac7ff9aec50a4e130a52ad08f1fe42c96dec047c50767be45",
        "serverClose calls sendCloseFrame(code=code, isReply=False) and relies on it for the state checks, the "
        "close payload and the closing handshake's timeout",
    ),
    Pin(
        "autobahn",
        "26.11.1",
        AUTOBAHN_PROTOCOL,
        "sendMessage",
        "5e4d3a7310f344af482443a2dc38a0526d188eee22d4607377971f614fca97c0",
        "the sendMessage wrapper passes (payload, isBinary, fragmentSize, sync, doNotCompress) positionally and "
        "lifts the outgoing limit by setting self.maxMessagePayloadSize to 0 for the call: the limit must still "
        "be read from that attribute, 0 must still mean none, and nothing in the call may apply it to incoming data",
    ),
    Pin(
        "autobahn",
        "26.11.1",
        AUTOBAHN_PROTOCOL,
        "sendData",
        "88f768f8c9b62cf049d9761b7f5243c883d8bd35bce2065ff6c86d12ac1a5f6c",
        "the sendData wrapper takes over its plain branch (no sync, no chopsize, empty send_queue), skipping its "
        "traffic statistics and octet logging; anything new in that branch is skipped too",
    ),
    Pin(
        "autobahn",
        "26.11.1",
        AUTOBAHN_PROTOCOL,
        "_send",
        "50e430b04d65b3760804ca70323668bdedab29f34b693bce511dae8489c0f0ba",
        "sync and chopped writes wait in send_queue and go out through transport.write on later turns; the "
        "sendData wrapper leaves the fast path while send_queue holds anything, so frames keep their order",
    ),
    Pin(
        "autobahn",
        "26.11.1",
        AUTOBAHN_PROTOCOL,
        "sendFrame",
        "45ce8bfe17782817f8c752bb2b47ed4e9a93d583c0b74d8a69d0c870023d2426",
        "every frame goes out through self.sendData(raw, sync, chopsize), which the sendData wrapper must accept",
    ),
    Pin(
        "autobahn",
        "26.11.1",
        AUTOBAHN_PROTOCOL,
        "_connectionMade",
        "6f363f37d56d5dfb68d49e41b0ed8f38bcda72496510e5789897b8a2c6049408",
        "it passes pformat(configAttrLog) to self.log.debug only as a keyword to format, which is all a "
        "FormattedWhenLogged can do (it is not a str until formatted)",
    ),
    Pin(
        "autobahn",
        "26.11.1",
        AUTOBAHN_TIMINGS,
        "__str__",
        "54de61eaec3ebc7ceb6364530e758dd8e7c68bc5f29b8ed5ded583be3c838226",
        "it must return a str, so the patch gives it its own pprint.pformat; the module's other pformat() "
        "calls (test_autobahn_formats_with_pformat_only_where_the_patch_knows) feed debug log lines",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.abstract:FileDescriptor",
        "__init__",
        "07cd8529302859e0435cd818b582f9130906ba08fac701a27134dcc82dc16fd3",
        "it creates _tempDataBuffer, which write_now reads",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.abstract:FileDescriptor",
        "write",
        "b3410de7a82777bb903c0760737f95905935b6316ed048c045d37953740d902e",
        "write_now hands the part the kernel refused to transport.write, and relies on write() only buffering "
        "(into _tempDataBuffer, then startWriting) and on it dropping writes when not connected or _writeDisconnected",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.abstract:FileDescriptor",
        "doWrite",
        "33b469b3af894e6aa9f85ee62f4875d6f83ab78301c722801983106e8d3ffcf3",
        "write_now sends only when dataBuffer and _tempDataBuffer are both empty, which must still mean that "
        "nothing waits to be written (dataBuffer is emptied only once all of it is written, offset included)",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.abstract:FileDescriptor",
        "loseConnection",
        "a4b569f42b3d1ac8bf385eca05e7721d6e706a4a718e8eb112c9abd1f1bf7032",
        "a closing transport sets disconnecting, which write_now reads to leave the write to the transport",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.abstract:FileDescriptor",
        "connectionLost",
        "f842913d125f509ef74115bdd9280df09217e9b6212a94b82e4d8021266674c8",
        "a lost connection clears connected, which write_now reads before it touches transport.socket",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.tcp:Connection",
        "__init__",
        "82433ee7a616597fa7a58e60c01c9134348365e74765710008eddffadb1b332f",
        "transport.socket is the connection's non-blocking socket, which write_now sends on",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.tcp:Connection",
        "connectionLost",
        "2593a9583349ff34b6187af7555add093287e77f50f6c8866e12f8289ab9fcb9",
        "a lost connection deletes transport.socket, so write_now must check connected first",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.tcp:Connection",
        "writeSomeData",
        "e3d4a1d1f7d66a152983f47fffbc5ca0f99f32064656f2bab29824e4a454933b",
        "write_now mirrors it: socket.send, EWOULDBLOCK as nothing sent, any other OSError left to the "
        "transport's next write",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.tcp:_AbortingMixin",
        "abortConnection",
        "3e713b2db2602cad1d994071bc86a0bc398e78232de6a62a45b5d6cf3c3eb14f",
        "an aborted transport sets _aborting, which write_now reads with getattr, so a rename would pass unseen",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.tcp:Server",
        "__init__",
        "ef8b9173c6923258b2f5ffb7859254f023d11ff879d1e6fc807295de670dace6",
        "an accepted connection is exactly tcp.Server, connected; write_now takes the fast path on nothing else",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet._newtls:ConnectionMixin",
        "write",
        "9a1ac7496539526b180a97e271f179bc03e117570b30bd830575923569fa92e6",
        "tcp.Server.write goes through TLS when transport.TLS is set (startTLS); write_now does not look at "
        "TLS and would send such a transport's bytes in the clear",
    ),
    Pin(
        "Twisted",
        "26.10.0",
        "twisted.internet.posixbase:PosixReactorBase",
        "listenSSL",
        "5e6449788a435d068b48887611e6b8be95b66f529ea9160856237d415073c866",
        "Daphne's ssl: endpoints wrap the protocol in TLSMemoryBIOProtocol over listenTCP, so a TLS socket's "
        "transport is not a tcp.Server and write_now leaves it alone; if TLS now runs through startTLS on the "
        "tcp.Server itself, write_now must check transport.TLS",
    ),
]

# Where each patched or mirrored name resolves from the class that uses it.
RESOLUTIONS = [
    (DAPHNE_PROTOCOL, "serverClose", DAPHNE_PROTOCOL),
    (DAPHNE_PROTOCOL, "sendMessage", AUTOBAHN_PROTOCOL),
    (DAPHNE_PROTOCOL, "sendData", AUTOBAHN_PROTOCOL),
    (DAPHNE_PROTOCOL, "sendCloseFrame", AUTOBAHN_PROTOCOL),
    (DAPHNE_PROTOCOL, "sendClose", AUTOBAHN_PROTOCOL),
    (DAPHNE_PROTOCOL, "_send", AUTOBAHN_PROTOCOL),
    (DAPHNE_PROTOCOL, "sendFrame", AUTOBAHN_PROTOCOL),
    ("twisted.internet.tcp:Server", "write", "twisted.internet._newtls:ConnectionMixin"),
    ("twisted.internet.tcp:Server", "doWrite", "twisted.internet.abstract:FileDescriptor"),
    ("twisted.internet.tcp:Server", "writeSomeData", "twisted.internet.tcp:Connection"),
    ("twisted.internet.tcp:Server", "connectionLost", "twisted.internet.tcp:Connection"),
    ("twisted.internet.tcp:Server", "abortConnection", "twisted.internet.tcp:_AbortingMixin"),
    (
        "twisted.internet.asyncioreactor:AsyncioSelectorReactor",
        "listenSSL",
        "twisted.internet.posixbase:PosixReactorBase",
    ),
]

PATCH = "realtime/daphne_compat.py"
TEST = "realtime/tests/test_daphne_compat.py"


@functools.cache
def pristine_module(name: str) -> types.ModuleType:
    """A fresh copy of a module from its file: install() may have patched the imported one in this process."""
    imported = importlib.import_module(name)
    # Under its own name, so its classes name the module they come from; it is not put in sys.modules.
    spec = importlib.util.spec_from_file_location(name, imported.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The classes whose own attributes install() replaces: read from a fresh copy of their module.
PATCHED_OWNERS = {DAPHNE_PROTOCOL, AUTOBAHN_TIMINGS}


def owner_class(owner: str) -> type:
    module_name, _, class_name = owner.partition(":")
    if owner in PATCHED_OWNERS:
        return getattr(pristine_module(module_name), class_name)
    return getattr(importlib.import_module(module_name), class_name)


def upstream(owner: str, name: str) -> Callable:
    """The function as its class defines it."""
    cls = owner_class(owner)
    assert name in vars(cls), f"{owner} no longer defines {name}: find where it went and re-check {PATCH}"
    return vars(cls)[name]


def source_sha256(function: Callable) -> str:
    return hashlib.sha256(textwrap.dedent(inspect.getsource(function)).encode()).hexdigest()


def parameters(function: Callable) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults: what a call binds to (annotations aside)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


# Layer 1: the upstream code the patch is written against.


@pytest.mark.parametrize("pin", PINS, ids=lambda pin: f"{pin.owner.split(':')[1]}.{pin.name}")
def test_upstream_source_is_the_one_the_patch_was_written_against(pin: Pin) -> None:
    actual = source_sha256(upstream(pin.owner, pin.name))
    installed = version(pin.distribution)
    module_name, _, class_name = pin.owner.partition(":")
    assert actual == pin.sha256, (
        f"{module_name}.{class_name}.{pin.name} is not the code {PATCH} was written against "
        f"(read from {pin.distribution} {pin.version}; installed: {pin.distribution} {installed}). "
        f"The patch relies on this: {pin.relied_on}. Read the new source "
        f"(python -c 'import inspect, {module_name} as m; print(inspect.getsource(m.{class_name}.{pin.name}))'), "
        f"adapt {PATCH} if that no longer holds, then in {TEST} set this pin's sha256 to {actual!r} "
        f"and its version to {installed!r}."
    )


@pytest.mark.parametrize(
    ("user", "name", "owner"), RESOLUTIONS, ids=[f"{user.split(':')[1]}.{name}" for user, name, _ in RESOLUTIONS]
)
def test_each_name_resolves_to_the_pinned_definition(user: str, name: str, owner: str) -> None:
    defined_by = next(cls for cls in owner_class(user).__mro__ if name in vars(cls))
    assert f"{defined_by.__module__}:{defined_by.__qualname__}" == owner, (
        f"{user}.{name} now comes from {defined_by.__module__}.{defined_by.__qualname__}, not {owner}: "
        f"read it, re-check {PATCH}, and pin the new definition in {TEST}."
    )


def test_autobahn_formats_with_pformat_only_where_the_patch_knows() -> None:
    source = inspect.getsource(importlib.import_module("autobahn.websocket.protocol"))
    # The import, _connectionMade's and the client's startHandshake's debug lines, and Timings.__str__.
    assert source.count("pformat(") == 3 and source.count("import pformat") == 1, (
        f"autobahn.websocket.protocol uses pformat elsewhere now: {PATCH} makes it lazy for the whole module; "
        "read each new use and make sure a lazily formatted object is fine there"
    )


def test_a_lazily_formatted_value_reads_as_pformat_would() -> None:
    settings = [("openHandshakeTimeout", 5, "WebSocketServerFactory"), ("autoPingInterval", 20, "Factory")]
    assert "\n{attrs}".format(attrs=daphne_compat.FormattedWhenLogged(settings)) == "\n" + pprint.pformat(settings)
    assert str(daphne_compat.FormattedWhenLogged(settings)) == pprint.pformat(settings)


def test_the_pristine_daphne_protocol_is_the_one_in_use() -> None:
    import daphne.ws_protocol

    # The pins read a fresh copy of Daphne's module; it must stand on the same classes as the one Daphne runs.
    assert owner_class(DAPHNE_PROTOCOL).__bases__ == daphne.ws_protocol.WebSocketProtocol.__bases__


class Probe:
    """Stands in for Daphne's protocol class so install() can patch it here; records what the wrappers call."""

    maxMessagePayloadSize = 65536
    transport = None

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.send_queue: collections.deque = collections.deque()
        self.limit_during_call: int | None = None

    def serverClose(self, *args, **kwargs) -> None:
        self.calls.append(("serverClose", args, kwargs))

    def sendMessage(self, *args, **kwargs) -> None:
        self.limit_during_call = self.maxMessagePayloadSize
        self.calls.append(("sendMessage", args, kwargs))

    def sendData(self, *args, **kwargs) -> None:
        self.calls.append(("sendData", args, kwargs))

    def sendCloseFrame(self, *args, **kwargs) -> None:
        self.calls.append(("sendCloseFrame", args, kwargs))


@pytest.fixture
def probe(monkeypatch) -> Probe:
    """An instance of a throwaway protocol class that install() has patched."""
    monkeypatch.setattr(daphne_compat, "TcpServer", daphne_compat.TcpServer)  # install() sets it
    protocol_class = type("WebSocketProtocol", (Probe,), {})
    monkeypatch.setitem(sys.modules, "daphne.ws_protocol", types.SimpleNamespace(WebSocketProtocol=protocol_class))
    assert daphne_compat.install()
    return protocol_class()


def only_call(probe: Probe, owner: str) -> inspect.BoundArguments:
    """The one upstream call the wrapper made, bound to the upstream function's signature."""
    assert len(probe.calls) == 1, probe.calls
    name, args, kwargs = probe.calls[0]
    bound = inspect.signature(upstream(owner, name)).bind(probe, *args, **kwargs)
    bound.apply_defaults()
    return bound


@pytest.mark.parametrize(
    ("name", "owner"),
    [("serverClose", DAPHNE_PROTOCOL), ("sendMessage", AUTOBAHN_PROTOCOL), ("sendData", AUTOBAHN_PROTOCOL)],
    ids=["serverClose", "sendMessage", "sendData"],
)
def test_each_wrapper_takes_the_arguments_of_what_it_replaces(probe: Probe, name: str, owner: str) -> None:
    assert parameters(getattr(type(probe), name)) == parameters(upstream(owner, name)), (
        f"{owner}.{name} takes other arguments now: make the {name} wrapper in {PATCH} take and pass them."
    )


def test_server_close_sends_a_standard_code_through_send_close_frame(probe: Probe) -> None:
    probe.serverClose(code=1008)
    assert only_call(probe, AUTOBAHN_PROTOCOL).arguments == {
        "self": probe,
        "code": 1008,
        "reasonUtf8": None,
        "isReply": False,
    }


@pytest.mark.parametrize("code", [4000, None])
def test_server_close_leaves_other_codes_to_daphne(probe: Probe, code: int | None) -> None:
    probe.serverClose(code=code)
    assert only_call(probe, DAPHNE_PROTOCOL).arguments == {"self": probe, "code": code}


def test_send_message_passes_each_argument_to_its_parameter_without_the_limit(probe: Probe) -> None:
    probe.sendMessage(b"payload", True, 512, True, True)
    assert only_call(probe, AUTOBAHN_PROTOCOL).arguments == {
        "self": probe,
        "payload": b"payload",
        "isBinary": True,
        "fragmentSize": 512,
        "sync": True,
        "doNotCompress": True,
    }
    assert probe.limit_during_call == 0
    assert probe.maxMessagePayloadSize == 65536


def test_send_data_passes_each_argument_to_its_parameter(probe: Probe) -> None:
    probe.sendData(b"frame", True, 7)
    assert only_call(probe, AUTOBAHN_PROTOCOL).arguments == {
        "self": probe,
        "data": b"frame",
        "sync": True,
        "chopsize": 7,
    }


# Layer 1, continued: write_now on a real Twisted TCP transport.


@pytest.fixture
def tcp_transport(monkeypatch) -> Iterator[tuple[tcp.Server, socket.socket]]:
    """A real twisted.internet.tcp.Server on an accepted loopback connection, under a reactor that runs nothing."""
    monkeypatch.setattr(daphne_compat, "TcpServer", tcp.Server)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.socket()
        # Small buffers on both sides, so that the kernel refuses part of a large write at once.
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.connect(listener.getsockname())
        accepted, address = listener.accept()
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setblocking(False)
    transport = tcp.Server(accepted, Protocol(), address, None, 1, MemoryReactorClock())
    try:
        yield transport, peer
    finally:
        accepted.close()
        peer.close()


def received(peer: socket.socket) -> bytes:
    """All the peer can read without waiting."""
    chunks = []
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_tcp_transport_has_every_attribute_write_now_reads(tcp_transport) -> None:
    transport, _ = tcp_transport
    state = {
        name: getattr(transport, name)
        for name in ("connected", "disconnecting", "_writeDisconnected", "_aborting", "dataBuffer", "_tempDataBuffer")
    }
    assert state == {
        "connected": 1,
        "disconnecting": 0,
        "_writeDisconnected": False,
        "_aborting": False,
        "dataBuffer": b"",
        "_tempDataBuffer": [],
    }
    assert isinstance(transport.socket, socket.socket)
    assert type(transport) is tcp.Server


def test_write_now_sends_at_once_on_an_idle_transport(tcp_transport) -> None:
    transport, peer = tcp_transport
    assert daphne_compat.write_now(transport, b"frame")
    assert received(peer) == b"frame"
    # No writability watch: that round trip through the reactor is what the fast path saves.
    assert transport.reactor.getWriters() == []


def test_write_now_leaves_a_write_behind_buffered_data_to_the_transport(tcp_transport) -> None:
    transport, peer = tcp_transport
    transport.write(b"first")
    assert not daphne_compat.write_now(transport, b"second")
    transport.doWrite()
    assert received(peer) == b"first"


def test_write_now_hands_what_the_kernel_refuses_to_the_transport_in_order(tcp_transport) -> None:
    transport, peer = tcp_transport
    large = bytes(range(256)) * (4 << 12)  # 1 MiB, far more than the two socket buffers hold
    assert daphne_compat.write_now(transport, large)
    assert transport._tempDataBuffer, "the kernel took 1 MiB at once: the test no longer reaches a partial send"
    assert transport in transport.reactor.getWriters()
    # Behind the remainder, a write is refused; autobahn's sendData then writes it to the transport.
    assert not daphne_compat.write_now(transport, b"next")
    transport.write(b"next")
    # Once Twisted has moved its list buffer to dataBuffer and written part of it, writes are still refused.
    transport.doWrite()
    assert transport.dataBuffer and not transport._tempDataBuffer
    assert not daphne_compat.write_now(transport, b"later")
    transport.write(b"later")
    got = bytearray()
    deadline = time.monotonic() + 10
    while transport in transport.reactor.getWriters() and time.monotonic() < deadline:
        got += received(peer)
        transport.doWrite()
    got += received(peer)
    assert bytes(got) == large + b"next" + b"later"
    assert transport.dataBuffer == b"" and transport._tempDataBuffer == []
    assert daphne_compat.write_now(transport, b"again")


@pytest.mark.parametrize(
    "close",
    [
        pytest.param(lambda transport: transport.loseConnection(), id="loseConnection"),
        pytest.param(lambda transport: transport.abortConnection(), id="abortConnection"),
        pytest.param(lambda transport: (transport.loseWriteConnection(), transport.doWrite()), id="half-closed"),
        pytest.param(
            lambda transport: transport.connectionLost(failure.Failure(error.ConnectionDone())), id="connectionLost"
        ),
    ],
)
def test_write_now_leaves_a_closing_transport_alone(tcp_transport, close: Callable) -> None:
    transport, peer = tcp_transport
    close(transport)
    assert not daphne_compat.write_now(transport, b"frame")
    assert b"frame" not in received(peer)


# Layers 2 and 3: a real Daphne serving realtime/tests/daphne_app.py, with the patch and without it.

MAX_MESSAGE = 65536
BURST = 2000
APP = "realtime.tests.daphne_app:application"


@dataclass
class Daphne:
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def daphne_flags() -> list[str]:
    """The production flags, with a 64 KiB limit on what clients send."""
    flags = list(DAPHNE_FLAGS)
    if "--websocket-max-message-size" in flags:
        flags[flags.index("--websocket-max-message-size") + 1] = str(MAX_MESSAGE)
    else:
        flags += ["--websocket-max-message-size", str(MAX_MESSAGE)]
    return flags


def serve(mode: str, log: Path) -> Iterator[Daphne]:
    port = free_port()
    command = [*daphne_command(port, daphne_flags())[:-1], APP]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env={**os.environ, "DAPHNE_COMPAT": mode}, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, process=process)
        yield Daphne(port, log)
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def patched_daphne(tmp_path_factory) -> Iterator[Daphne]:
    yield from serve("patched", tmp_path_factory.mktemp("daphne") / "patched.log")


@pytest.fixture(scope="module")
def upstream_daphne(tmp_path_factory) -> Iterator[Daphne]:
    yield from serve("upstream", tmp_path_factory.mktemp("daphne") / "upstream.log")


def client(url: str, **options):
    """A websockets client with no limit on what it takes in, and no pings or compression of its own."""
    return connect(
        url, open_timeout=10, close_timeout=2, ping_interval=None, compression=None, max_size=None, **options
    )


async def closed_by_server(url: str) -> ConnectionClosed:
    """Open url and wait for the server to close it; fail if it sends a frame first."""
    async with asyncio.timeout(10), client(url) as socket_:
        try:
            message = await socket_.recv()
        except ConnectionClosed as closed:
            return closed
    pytest.fail(f"{url} sent {message[:80]!r} where a close was expected")


@pytest.mark.live
@pytest.mark.parametrize("code", sorted(daphne_compat.STANDARD_CLOSE_CODES | {1000, 3000, 4000, 4999}))
async def test_the_app_close_code_reaches_the_client(patched_daphne: Daphne, code: int) -> None:
    closed = await closed_by_server(patched_daphne.url(f"/close/{code}"))
    assert closed.rcvd is not None and closed.rcvd.code == code, (
        f"the app closed with {code}, the client got {closed.rcvd or 'no close frame'}; "
        f"re-check serverClose in {PATCH}. Daphne's log:\n{patched_daphne.output()}"
    )


@pytest.mark.live
async def test_the_server_sends_past_the_limit_that_still_holds_for_clients(patched_daphne: Daphne) -> None:
    async with asyncio.timeout(20), client(patched_daphne.url(f"/send/{200 * 1024}")) as socket_:
        try:
            assert await socket_.recv() == "x" * (200 * 1024)
        except ConnectionClosed as closed:
            pytest.fail(
                f"Daphne did not send the app's 200 KiB frame ({closed}); re-check sendMessage in {PATCH}. "
                f"Daphne's log:\n{patched_daphne.output()}"
            )
        await socket_.send("y" * MAX_MESSAGE)
        assert await socket_.recv() == str(MAX_MESSAGE)
        # After the server's own large frame: the limit must be back for what the client sends.
        await socket_.send("y" * (MAX_MESSAGE + 1))
        try:
            answer = await socket_.recv()
        except ConnectionClosed as closed:
            # Autobahn fails the connection by dropping it (failByDrop), so there may be no close frame.
            assert closed.rcvd is None or closed.rcvd.code == 1009, closed
        else:
            pytest.fail(
                f"Daphne passed a {MAX_MESSAGE + 1}-byte client message to the app (it answered {answer!r}): "
                f"--websocket-max-message-size no longer bounds what clients send; re-check sendMessage in {PATCH}"
            )


@pytest.mark.live
async def test_a_burst_of_frames_arrives_whole_and_in_order(patched_daphne: Daphne) -> None:
    token = uuid.uuid4().hex
    # The client takes the burst only after Daphne has handed all of it to Twisted: a small receive buffer
    # and a one-frame queue make the kernel refuse part of it, so the burst goes out through all three
    # ways write_now has (at once, in part, behind Twisted's buffer).
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        raw.connect(("127.0.0.1", patched_daphne.port))
        async with (
            asyncio.timeout(30),
            client(patched_daphne.url(f"/burst/{BURST}/{token}"), sock=raw, max_queue=1) as burst,
            client(patched_daphne.url(f"/burst-sent/{token}")) as report,
        ):
            counts = json.loads(await report.recv())
            for index in range(BURST):
                frame = await burst.recv()
                assert frame == burst_frame(index), (
                    f"frame {index} of the burst is {frame[:20]!r}…, {len(frame)} characters, where "
                    f"{burst_frame(index)[:20]!r}…, {len(burst_frame(index))} were sent; write_now did {counts}"
                )
            await burst.send("after")
            assert await burst.recv() == "5"
    finally:
        raw.close()
    assert counts.get("direct") and counts.get("partial") and counts.get("queued"), (
        f"write_now did {counts} with a burst of {BURST}: the test no longer exercises the fast path, a partial "
        f"send and the backlog (no 'direct' means Daphne's transport is no longer a plain tcp.Server)"
    )


@pytest.mark.live
@pytest.mark.parametrize(
    ("path", "what"),
    [("/close/1008", "an app's close with 1008"), (f"/send/{200 * 1024}", "a 200 KiB frame from the app")],
    ids=["close-1008", "send-200KiB"],
)
async def test_without_the_patch_daphne_fails_what_the_patch_exists_for(
    upstream_daphne: Daphne, path: str, what: str
) -> None:
    closed = await closed_by_server(upstream_daphne.url(path))
    assert closed.rcvd is not None and closed.rcvd.code == 1011, (
        f"Without the patch, {what} no longer ends in Daphne's 1011 (the client got "
        f"{closed.rcvd or 'no close frame'}): upstream changed; if it now passes it through, that part of "
        f"{PATCH} may be unneeded. Daphne's log:\n{upstream_daphne.output()}"
    )
