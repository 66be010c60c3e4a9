"""A deploy as people see it: the Daphne process serving bob's tab restarts, and alice, watching, sees nothing.

The production shape (presence_site.stack.Stack: Redis, PostgreSQL, two Daphne
processes, nginx) serves both people through one origin, as in production, so
the page that the restarting process closes with 1012 reconnects through nginx
to the other process. Alice watches the presence page from the other process;
what she could see is recorded twice: in her page (a MutationObserver on the
online list and the feed) and on her socket (every frame it receives, through
Playwright). Run with -s to see how long the reconnect took.
"""

import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import BrowserContext, Page, WebSocket, expect

from presence.tests.test_browser import browser  # noqa: F401  (the module's Chromium)
from presence_site.stack import Stack
from presence_site.tests.test_faults import get, online_users, query, restore

pytestmark = [pytest.mark.browser, pytest.mark.fault, pytest.mark.timeout(300)]

PASSWORD = "correct-horse-battery-9"
# The defaults, named here because the test's window depends on them.
LEAVE_GRACE = 1.5
COALESCE_WINDOW = 0.25
STACK_ENV = {"PRESENCE_LEAVE_GRACE": f"{LEAVE_GRACE:g}", "PRESENCE_COALESCE_WINDOW": f"{COALESCE_WINDOW:g}"}

# Every socket the page opens, with its times (ms since the epoch) and close code, in window.__sockets;
# every change of the header's connection state in window.__connection.
RECORD_SOCKETS = """
window.__sockets = [];
const Native = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const socket = new Native(url, protocols);
  const entry = {url: String(url), created: Date.now(), opened: null, closed: null, code: null};
  window.__sockets.push(entry);
  socket.addEventListener("open", () => { entry.opened = Date.now(); });
  socket.addEventListener("close", event => { entry.closed = Date.now(); entry.code = event.code; });
  return socket;
};
window.WebSocket.prototype = Native.prototype;
Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
window.__connection = [];
new MutationObserver(() => window.__connection.push([Date.now(), document.documentElement.dataset.connection]))
  .observe(document, {subtree: true, attributes: true, attributeFilter: ["data-connection"]});
"""

# From now on, every moment the online list does not show the user (as online or away), and every feed entry added.
WATCH_PRESENCE_PAGE = """
username => {
  window.__missing = [];
  window.__feedAdded = [];
  const list = document.getElementById("online-list");
  const shown = () => Array.from(list.querySelectorAll("li.user"))
    .some(li => li.dataset.username === username && li.dataset.state !== "offline");
  new MutationObserver(() => { if (!shown()) window.__missing.push(Date.now()); })
    .observe(list, {childList: true, subtree: true, attributes: true});
  new MutationObserver(records => records.forEach(
    record => record.addedNodes.forEach(node => window.__feedAdded.push(node.textContent))))
    .observe(document.getElementById("feed"), {childList: true});
}
"""

# The first socket closed with 1012, and the first one the page opened after it.
RESTART_RECONNECTED = """
() => {
  const closed = window.__sockets.findIndex(s => s.code === 1012);
  return closed >= 0 && window.__sockets.slice(closed + 1).some(s => s.opened !== null);
}
"""


@pytest.fixture(scope="module")
def restart_stack() -> Iterator[Stack]:
    with Stack(processes=2, env=STACK_ENV) as stack:
        stack.manage("make_sessions", "alice", "bob", "--password", PASSWORD, capture=True)
        yield stack


@pytest.fixture
def stack(restart_stack) -> Iterator[Stack]:
    """Both processes serving before and after the test, and nobody left online for the next one."""
    restore(restart_stack)
    yield restart_stack
    restore(restart_stack)
    deadline = time.monotonic() + 15
    while left := online_users(restart_stack):
        assert time.monotonic() < deadline, f"left online after the test: {left}"
        time.sleep(0.2)


@pytest.fixture
def new_context(browser, stack) -> Iterator[Callable[[], BrowserContext]]:  # noqa: F811  (browser is a fixture)
    """Open browser contexts on the stack's one address (nginx); all closed at teardown."""
    contexts: list[BrowserContext] = []

    def open_() -> BrowserContext:
        context = browser.new_context(base_url=stack.url, locale="en-GB", timezone_id="UTC")
        contexts.append(context)
        return context

    yield open_
    for context in contexts:
        context.close()


def log_in(page: Page, username: str, next_: str) -> None:
    """Log in through the form and land on next_ with the page's socket open."""
    page.goto(f"/accounts/login/?next={next_}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(re.escape(next_) + "$"))
    expect(page.locator("html[data-connection=ok]")).to_have_count(1)


def online(page: Page, username: str):
    return page.locator("#online-list li.user").filter(has=page.locator(".name", has_text=username))


def sockets_of(stack: Stack, username: str) -> list[tuple[str, str, float]]:
    """(channel name, process id, registered at as a Unix time) of each registered socket of the user."""
    return query(
        stack,
        "SELECT c.channel_name, c.server, extract(epoch FROM c.opened_at)::float FROM presence_connection c"
        " JOIN auth_user u ON u.id = c.user_id WHERE u.username = %s",
        username,
    )


def process_index(stack: Stack, server: str) -> int:
    """Which of the stack's processes a connection row's server is (its id holds the process id)."""
    pid = int(server.split(":")[1])
    pids = [process.pid if process is not None else None for process in stack.apps]
    assert pid in pids, f"{server} is none of the stack's processes {pids}"
    return pids.index(pid)


def registered_socket(stack: Stack, username: str, *, other_than: str | None = None) -> tuple[str, str, float]:
    """The user's one registered socket (registration follows the page's open), other than the given channel."""
    deadline = time.monotonic() + 10
    while True:
        rows = sockets_of(stack, username)
        if len(rows) == 1 and rows[0][0] != other_than:
            return rows[0]
        assert time.monotonic() < deadline, f"{username}'s sockets: {rows}"
        time.sleep(0.05)


def presence_page_live(page: Page) -> None:
    expect(page.locator("html[data-presence=live]")).to_have_count(1)
    expect(online(page, "bob")).to_be_visible()


@pytest.mark.parametrize("where", ["room page", "room list"])
def test_a_restart_of_the_process_serving_bob_shows_alice_nothing(stack, new_context, where):
    alice_context, bob_context = new_context(), new_context()
    bob_context.add_init_script(RECORD_SOCKETS)
    bob_page = bob_context.new_page()
    log_in(bob_page, "bob", "/chat/")
    if where == "room page":
        bob_page.get_by_label("Room name").fill("Deploy day")
        bob_page.get_by_role("button", name="Create room").click()
        expect(bob_page).to_have_url(f"{stack.url}/chat/deploy-day/")
        expect(bob_page.locator("html[data-connection=ok]")).to_have_count(1)
    bob_channel, bob_server, _ = registered_socket(stack, "bob")
    restarted = process_index(stack, bob_server)

    alice_page = alice_context.new_page()
    alice_sockets: list[WebSocket] = []  # every socket alice's page opens
    frames: list[dict] = []  # every frame they receive

    def watch(socket: WebSocket) -> None:
        alice_sockets.append(socket)
        socket.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    alice_page.on("websocket", watch)
    log_in(alice_page, "alice", "/")
    presence_page_live(alice_page)
    # Alice watches from the other process. nginx takes turns over the processes, request by request: a
    # reload puts her socket on the other one, or a reload after one more request does.
    channel, server, _ = registered_socket(stack, "alice")
    for attempt in range(6):
        if process_index(stack, server) != restarted:
            break
        if attempt % 2:
            assert get(f"{stack.url}/healthz")[0] == 200
        alice_page.reload()
        presence_page_live(alice_page)
        channel, server, _ = registered_socket(stack, "alice", other_than=channel)
    else:
        pytest.fail("nginx kept alice's socket on bob's process")

    alice_page.evaluate(WATCH_PRESENCE_PAGE, "bob")
    alice_page.evaluate("0")  # a round trip: every frame received before it has been handed to the test
    assert any(frame["type"] == "presence.snapshot" for frame in frames), "alice's socket is watched"
    sockets_before, watched_from = len(alice_sockets), len(frames)
    process = stack.apps[restarted]
    with ThreadPoolExecutor(1) as pool:
        # SIGTERM as a deploy does: the process drains (1012) and exits; the test watches the pages meanwhile.
        started = time.time()
        stopping = pool.submit(stack.stop_app, restarted)
        try:
            bob_page.wait_for_function(RESTART_RECONNECTED, timeout=15_000)
            expect(bob_page.locator("html[data-connection=ok]")).to_have_count(1)
            _, bob_server_now, registered_at = registered_socket(stack, "bob", other_than=bob_channel)
        finally:
            stopping.result(timeout=60)
        stopped_in = time.time() - started
    assert process.returncode == 0
    assert bob_server_now != bob_server

    # Every leave and diff the old process held went out before it exited; bob's join, had he been announced
    # gone, would follow his registration within a diff window. Nothing to wait on when nothing happens:
    # watch alice's page for one leave grace and one diff window more.
    time.sleep(LEAVE_GRACE + COALESCE_WINDOW)

    # The restarted process serves again: ready, and a tab of bob's opened straight at it holds its socket there.
    stack.start_app(restarted)
    port = stack.app_ports[restarted]
    assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
    direct = bob_context.new_page()
    direct.goto(f"http://127.0.0.1:{port}/chat/")
    expect(direct.locator("html[data-connection=ok]")).to_have_count(1)
    deadline = time.monotonic() + 10
    while not any(process_index(stack, server) == restarted for _, server, _ in sockets_of(stack, "bob")):
        assert time.monotonic() < deadline, f"bob's sockets: {sockets_of(stack, 'bob')}"
        time.sleep(0.05)

    # Bob's page: closed with 1012, connected again (the header says so) within 2 s.
    sockets = bob_page.evaluate("window.__sockets")
    assert [s["code"] for s in sockets] == [1012, None], json.dumps(sockets)
    closed, reopened = sockets
    header = [(at, state) for at, state in bob_page.evaluate("window.__connection") if at >= closed["closed"]]
    assert header[0][1] == "wait", header
    back = next(at for at, state in header if state == "ok")
    assert (back - closed["closed"]) / 1000 < 2.0, header
    expect(bob_page.locator("html[data-connection=ok]")).to_have_count(1)

    # Alice's page: bob never left the online list, the feed gained nothing, and no frame told her of him.
    alice_page.evaluate("0")  # a round trip: every frame received before it has been handed to the test
    assert alice_page.evaluate("window.__missing") == [], "bob was missing from alice's online list"
    assert alice_page.evaluate("window.__feedAdded") == [], "alice's feed told of bob"
    assert len(alice_sockets) == sockets_before and not alice_sockets[-1].is_closed(), "alice's socket stayed open"
    told = [
        frame
        for frame in frames[watched_from:]
        if frame["type"] == "presence.snapshot"
        or (
            frame["type"] == "presence.diff"
            and "bob" in {user["username"] for user in frame.get("joins", []) + frame.get("leaves", [])}
        )
    ]
    assert told == []
    expect(online(alice_page, "bob")).to_have_attribute("data-state", "online")
    seconds = {
        name: (at - closed["closed"]) / 1000
        for name, at in [("created", reopened["created"]), ("opened", reopened["opened"]), ("header", back)]
    }
    print(
        f"\nRESTART under bob's {where}: his socket closed 1012 {closed['closed'] / 1000 - started:.2f} s after"
        f" SIGTERM; the next one created {seconds['created']:.2f} s after the close (jitter), open at"
        f" {seconds['opened']:.2f} s, header back at {seconds['header']:.2f} s, registered on the other process at"
        f" {registered_at - closed['closed'] / 1000:.2f} s (leave grace {LEAVE_GRACE:g} s); the old process exited 0"
        f" {stopped_in:.1f} s after SIGTERM",
        flush=True,
    )
