"""The web UI in a real browser: headless Chromium driven by Selenium, two nodes on loopback.

Each node is a ``p2pspace run`` process (loopback only, no discovery); each gets its own browser.
Chromium runs with everything that would phone home switched off and its own profile folder, so
no traffic leaves loopback and nothing is downloaded. Every wait is an explicit WebDriverWait
(or a bounded wait on process output); no sleeps. The tests skip when the system Chromium or
chromedriver is missing.

Screenshots of the main views are saved in ``build/screenshots/`` (``P2PSPACE_SCREENSHOTS``
names another folder) for a reviewer to look at; they are not committed.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from starlette.applications import Starlette

from p2pspace.app.web import CONTENT_SECURITY_POLICY, ui_routes
from tests.helpers import TIMEOUT
from tests.helpers.cli_node import NodeProcess, cli, running
from tests.helpers.task_plugin import plugin_env, plugin_site

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-proxy-server",
    "--no-pings",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--disable-features=NetworkTimeServiceQuerying,AutofillServerCommunication,"
    "OptimizationHints,MediaRouter,Translate,SafeBrowsing",
    # The backstop: every host name but the loopback one fails to resolve, so whatever Chromium
    # still tries to reach by itself (sign-in, time and update checks) goes nowhere.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--window-size=1280,1000",
]

T = TypeVar("T")

needs_browser = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs the system Chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}): "
    "apt-get install chromium chromium-driver",
)


# -- browsers ---------------------------------------------------------------------------------


@pytest.fixture
def open_browser(tmp_path: Path) -> Iterator[Callable[[str], webdriver.Chrome]]:
    """Start a headless Chromium (``name`` names its profile folder); all quit at the end."""
    drivers: list[webdriver.Chrome] = []

    def start(name: str) -> webdriver.Chrome:
        options = Options()
        options.binary_location = str(CHROMIUM)
        for arg in CHROMIUM_ARGS:
            options.add_argument(arg)
        options.add_argument(f"--user-data-dir={tmp_path / ('chromium-' + name)}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # Given a driver path, Selenium does not run Selenium Manager (which would download).
        driver = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


SCREENSHOTS = Path(
    os.environ.get("P2PSPACE_SCREENSHOTS", Path(__file__).parents[2] / "build" / "screenshots")
)


def screenshot(driver: WebDriver, name: str) -> None:
    """Save what ``driver`` shows as ``SCREENSHOTS/name.png`` (for a reviewer, not asserted)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def token_of(node: NodeProcess) -> str:
    return (node.home / "api.token").read_text().strip()


def one_time_link(node: NodeProcess) -> str:
    """A fresh one-time link to the web UI, as ``p2pspace open`` gets it."""
    request = urllib.request.Request(
        f"{node.api_url}/api/ui-link",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {token_of(node)}", "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=TIMEOUT) as response:
        url: str = json.loads(response.read())["url"]
    return url


def page_url(node: NodeProcess, space: str) -> str:
    return f"{one_time_link(node)}&space={space}"


def wait_for(driver: WebDriver, what: str, condition: Callable[[WebDriver], T | None]) -> T:
    """``condition``'s first truthy result within :data:`TIMEOUT` seconds.

    Elements go stale when a live update re-renders them; the condition is then tried again.
    """
    wait = WebDriverWait(driver, TIMEOUT, ignored_exceptions=[StaleElementReferenceException])
    found = wait.until(lambda d: condition(d) or None, message=f"waiting for {what}")
    assert found is not None
    return found


def find(driver: WebDriver | WebElement, css: str) -> WebElement | None:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def topic_item(driver: WebDriver, title: str) -> WebElement | None:
    for item in driver.find_elements(By.CSS_SELECTOR, "#topic-list [data-testid=topic]"):
        link = find(item, ".topic-title")
        if link is not None and link.text == title:
            return item
    return None


def topic_status(driver: WebDriver, title: str) -> str | None:
    """How far the topic got (its item's ``data-status``); the pill shows only until it has
    reached every member."""
    item = topic_item(driver, title)
    if item is None:
        return None
    status = item.get_attribute("data-status")
    pill = find(item, "[data-testid=status]")
    if status == "delivered to 2 of 2":
        assert pill is None
    else:
        assert pill is not None and pill.get_attribute("data-status") == status
    return status


def post_with_body(driver: WebDriver, body: str) -> WebElement | None:
    """The thread's post (its ``li``) whose own body shows ``body``."""
    for post in driver.find_elements(By.CSS_SELECTOR, "#thread [data-testid=post]"):
        shown = find(post, ":scope > .card > [data-testid=body]")
        if shown is not None and shown.text == body:
            return post
    return None


def post_by_id(driver: WebDriver, post_id: str) -> WebElement | None:
    return find(driver, f'#thread [data-post-id="{post_id}"]')


def own_body(post: WebElement) -> str:
    body = find(post, ":scope > .card > [data-testid=body]")
    return body.text if body is not None else ""


def actions(post: WebElement) -> list[str]:
    buttons = post.find_elements(By.CSS_SELECTOR, ":scope > .card > .actions > button")
    return [b.get_attribute("data-action") or "" for b in buttons]


def click_action(driver: WebDriver, post_id: str, action: str) -> None:
    def clicked(d: WebDriver) -> bool:
        post = post_by_id(d, post_id)
        button = find(post, f":scope > .card [data-action={action}]") if post else None
        if button is None:
            return False
        button.click()
        return True

    wait_for(driver, f"the {action} button of {post_id}", clicked)


def open_thread(driver: WebDriver, title: str) -> str:
    """Open the thread ``title`` from the thread list; its topic id."""

    def clicked(d: WebDriver) -> str | None:
        item = topic_item(d, title)
        if item is None:
            return None
        topic = item.get_attribute("data-topic-id")
        link = find(item, ".topic-title")
        assert link is not None
        link.click()
        return topic

    topic = wait_for(driver, f"thread {title!r} in the list", clicked)
    wait_for(driver, f"thread {title!r} open", lambda d: post_by_id(d, topic))
    return topic


def post_topic(driver: WebDriver, title: str, body: str) -> None:
    form = wait_for(driver, "the new-topic form", lambda d: find(d, "#new-topic"))
    field = find(form, "#topic-title")
    assert field is not None
    field.send_keys(title)
    text = find(form, "#topic-body")
    assert text is not None
    text.send_keys(body)
    button = find(form, "#post-topic")
    assert button is not None
    button.click()


def submit_form(driver: WebDriver, post_id: str, kind: str, text: str, *, clear: bool) -> None:
    """Type into the open reply or edit form of ``post_id`` and submit it."""
    form = wait_for(
        driver,
        f"the {kind} form",
        lambda d: find(d, f'[data-post-id="{post_id}"] > .form-slot [data-testid={kind}-form]'),
    )
    area = find(form, "textarea")
    assert area is not None
    if clear:
        area.clear()
    area.send_keys(text)
    button = find(form, "button[type=submit]")
    assert button is not None
    button.click()
    wait_for(driver, f"the {kind} form to close", lambda d: detached(form))


def detached(element: WebElement) -> bool:
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


def undo_label(driver: WebDriver) -> str:
    what = find(driver, "#undo-what")
    return what.text if what is not None and undo_enabled(driver) else ""


def undo_enabled(driver: WebDriver) -> bool:
    button = find(driver, "#undo")
    return button is not None and button.is_enabled()


# -- the tests ----------------------------------------------------------------------------------


@needs_browser
def test_two_pages_follow_each_other_live(
    tmp_path: Path, open_browser: Callable[[str], webdriver.Chrome]
) -> None:
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    cli(a_home, "init", "--name", "ann")
    cli(b_home, "init", "--name", "bob")
    b_id = cli(b_home, "id", "--hex").stdout.strip()
    space = cli(a_home, "space", "create", "notes").stdout.strip()

    with running(a_home, tmp_path / "a.log") as a:
        with running(b_home, tmp_path / "b1.log"):
            code = cli(a_home, "invite", "notes", "--ttl", "600").stdout.strip()
            assert cli(b_home, "join", code, "--timeout", str(TIMEOUT)).stdout.strip() == space
        # Bob's node is down: what Ann posts now stays pending.

        ann = open_browser("ann")
        ann.get(page_url(a, space))
        wait_for(ann, "the space", lambda d: find(d, '#space-list a[aria-current="page"]'))
        ann.execute_script("window.noReload = true")
        post_topic(ann, "While bob is away", "see you later")
        assert wait_for(ann, "pending", lambda d: topic_status(d, "While bob is away")) == "pending"
        bob_row = f'#member-list [data-member-id="{b_id}"]'
        wait_for(ann, "bob offline", lambda d: find(d, bob_row + '[data-online="no"]'))

        with running(b_home, tmp_path / "b2.log") as b:
            # Bob's node dials Ann's from its address book and catches up; Ann's page follows.
            wait_for(
                ann,
                "delivered",
                lambda d: topic_status(d, "While bob is away") == "delivered to 2 of 2",
            )
            wait_for(ann, "bob online", lambda d: find(d, bob_row + '[data-online="yes"]'))
            wait_for(ann, "bob live", lambda d: find(d, bob_row + ' [data-sync="live"]'))

            bob = open_browser("bob")
            bob.get(page_url(b, space))
            wait_for(bob, "the early topic", lambda d: topic_item(d, "While bob is away"))
            bob.execute_script("window.noReload = true")

            # A new topic shows up in Bob's open page, without a reload.
            post_topic(ann, "Live one", "first words")
            wait_for(bob, "the live topic", lambda d: topic_item(d, "Live one"))
            topic = open_thread(bob, "Live one")
            assert open_thread(ann, "Live one") == topic
            root = post_by_id(bob, topic)
            assert root is not None
            assert actions(root) == ["reply"]  # not Bob's post: no edit, no delete
            ann_root = post_by_id(ann, topic)
            assert ann_root is not None
            assert actions(ann_root) == ["reply", "edit", "delete"]

            # Bob replies; Ann answers his reply (nested).
            click_action(bob, topic, "reply")
            submit_form(bob, topic, "reply", "hello from bob", clear=False)
            bob_reply = wait_for(ann, "bob's reply", lambda d: post_with_body(d, "hello from bob"))
            reply_id = bob_reply.get_attribute("data-post-id")
            assert reply_id is not None and reply_id.startswith(topic + ".")
            assert actions(bob_reply) == ["reply"]
            click_action(ann, reply_id, "reply")
            submit_form(ann, reply_id, "reply", "nested from ann", clear=False)
            nested = wait_for(
                bob,
                "ann's nested reply",
                lambda d: find(d, f'[data-post-id="{reply_id}"] > .replies > [data-testid=post]'),
            )
            nested_id = nested.get_attribute("data-post-id")
            assert nested_id is not None
            wait_for(bob, "the nested body", lambda d: own_body(nested) == "nested from ann")

            # Bob starts a reply; Ann's edit arrives meanwhile; his draft stays.
            click_action(bob, topic, "reply")
            draft = wait_for(
                bob, "bob's reply form", lambda d: find(d, f'[data-post-id="{topic}"] textarea')
            )
            draft.send_keys("a draft")
            click_action(ann, topic, "edit")
            submit_form(ann, topic, "edit", "edited words", clear=True)
            wait_for(bob, "the edit", lambda d: own_body(root) == "edited words")
            assert find(root, ":scope > .card [data-testid=edited]") is not None
            assert draft.get_attribute("value") == "a draft"
            assert draft == bob.switch_to.active_element

            # Ann deletes her nested reply, then undoes that.
            wait_for(ann, "undo enabled after the edit", undo_enabled)
            click_action(ann, nested_id, "delete")
            wait_for(bob, "the delete", lambda d: nested.get_attribute("data-deleted") == "yes")
            assert own_body(nested) == "[deleted]"
            wait_for(ann, "undo offered for the delete", lambda d: "delete" in undo_label(d))
            undo = find(ann, "#undo")
            assert undo is not None
            undo.click()
            wait_for(bob, "the undo", lambda d: own_body(nested) == "nested from ann")
            wait_for(ann, "nothing left to undo", lambda d: not undo_enabled(d))
            wait_for(
                ann,
                "the reply delivered",
                lambda d: (
                    (p := post_by_id(d, nested_id)) is not None
                    and p.get_attribute("data-status") == "delivered to 2 of 2"
                ),
            )

            # Phone width: one column, nothing wider than the screen.
            bob.set_window_size(390, 844)
            fits = "return document.documentElement.scrollWidth <= window.innerWidth"
            wait_for(bob, "the page to fit a phone", lambda d: d.execute_script(fits))

            assert bob.execute_script("return window.noReload") is True
            assert ann.execute_script("return window.noReload") is True
            for driver in (ann, bob):
                # No script error, no Content-Security-Policy violation, no failed request.
                logs: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
                severe = [e for e in logs if e["level"] == "SEVERE"]
                assert severe == []
            screenshot(ann, "thread")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_page_needs_a_one_time_link_and_listens_on_loopback_only(tmp_path: Path) -> None:
    home = tmp_path / "a"
    cli(home, "init", "--name", "ann")
    with running(home, tmp_path / "a.log") as node:
        url = urlsplit(node.api_url)
        assert url.hostname == "127.0.0.1" and url.port
        token = (home / "api.token").read_text().strip()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)

        # Without a credential, or with the token in the URL: nothing but a pointer to
        # `p2pspace open`.
        for path in ["/", "/ui/app.js", "/ui/app.css", f"/?token={token}"]:
            with pytest.raises(urllib.error.HTTPError) as caught:
                opener.open(node.api_url + path, timeout=TIMEOUT)
            assert caught.value.code == 401, path
            assert caught.value.read()
            caught.value.close()

        # The one-time link: exchanged once for an HttpOnly, SameSite=Strict cookie.
        link = one_time_link(node)
        assert token not in link
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(link, timeout=TIMEOUT)
        assert redirected.value.code == 303
        location = redirected.value.headers["Location"]
        assert location.startswith("/#session=")  # the page's secret: in the fragment only
        cookie = redirected.value.headers["Set-Cookie"]
        redirected.value.close()
        assert cookie.startswith(f"p2pspace_ui_{url.port}=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        with pytest.raises(urllib.error.HTTPError) as again:
            opener.open(link, timeout=TIMEOUT)  # used: it works once
        assert again.value.code == 401
        again.value.close()
        session = {"Cookie": cookie.split(";", 1)[0]}
        page_request = urllib.request.Request(f"{node.api_url}/", headers=session)
        with opener.open(page_request, timeout=TIMEOUT) as response:
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert response.headers["Cache-Control"] == "no-store"
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["Referrer-Policy"] == "no-referrer"
            page = response.read().decode()
        assert 'src="/ui/app.js"' in page and token not in page
        request = urllib.request.Request(f"{node.api_url}/ui/app.js", headers=session)
        with opener.open(request, timeout=TIMEOUT) as response:
            assert response.headers["Content-Type"].startswith("text/javascript")

        # Bound to 127.0.0.1 alone: another loopback address of the same port is refused, and
        # the kernel's table of listening sockets shows no other address for that port.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", url.port), timeout=TIMEOUT).close()
        listening = listening_addresses(url.port)
        if listening is not None:
            assert listening == {"127.0.0.1"}


def listening_addresses(port: int) -> set[str] | None:
    """The local addresses with a TCP socket listening on ``port`` (Linux), else None."""
    found: set[str] = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            if size == 4:
                return None
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, port_hex = local.partition(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, words))
    return found


async def test_ui_routes_serve_listed_files_only() -> None:
    transport = httpx.ASGITransport(app=Starlette(routes=ui_routes()))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["x-frame-options"] == "DENY"
        assert 'src="/ui/app.js"' in page.text and "token" not in page.text
        for name, kind in [
            ("app.js", "text/javascript"),
            ("app.css", "text/css"),
            ("icon.svg", "image/svg+xml"),
        ]:
            response = await client.get(f"/ui/{name}")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(kind)
            assert response.headers["cache-control"] == "no-store"
        for name in ["index.html", "..%2Fweb.py", "../web.py", "nope.js", "%2e%2e%2fapi.py"]:
            assert (await client.get(f"/ui/{name}")).status_code == 404, name


# A page script (installed before the app's) that dates every topic and thread the API sends at
# 2**53-1 ms -- a time no Date can hold -- and marks them clamped, as a hostile member's post is.
FAR_FUTURE_FETCH = """
const realFetch = window.fetch.bind(window);
window.fetch = async (input, init) => {
  const response = await realFetch(input, init);
  const path = String(input);
  if (!/^\\/tools\\/discussion\\/api\\/spaces\\/[^/]+\\/(topics|threads\\/)/.test(path)) {
    return response;
  }
  const data = await response.clone().json();
  const far = 2 ** 53 - 1;
  for (const item of [...(data.topics ?? []), ...(data.thread ? [data.thread] : [])]) {
    item.created = far;
    item.last_activity = far;
    item.time_clamped = true;
  }
  return new Response(JSON.stringify(data), {
    status: response.status,
    headers: { "Content-Type": "application/json" },
  });
};
"""


def member_row(driver: WebDriver, member_id: str) -> WebElement | None:
    return find(driver, f'#member-list [data-member-id="{member_id}"]')


def click(driver: WebDriver, css: str, what: str) -> None:
    def clicked(d: WebDriver) -> bool:
        button = find(d, css)
        if button is None or not button.is_enabled():
            return False
        button.click()
        return True

    wait_for(driver, what, clicked)


@needs_browser
def test_members_panel_and_times_no_date_can_hold(
    tmp_path: Path, open_browser: Callable[[str], webdriver.Chrome]
) -> None:
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    cli(a_home, "init", "--name", "ann")
    cli(b_home, "init", "--name", "bob")
    b_id = cli(b_home, "id", "--hex").stdout.strip()
    space = cli(a_home, "space", "create", "notes").stdout.strip()
    cli(a_home, "discuss", "post", "notes", "From the future", "dated 2**53-1")

    with running(a_home, tmp_path / "a.log") as a, running(b_home, tmp_path / "b.log") as b:
        code = cli(a_home, "invite", "notes", "--ttl", "600").stdout.strip()
        assert cli(b_home, "join", code, "--timeout", str(TIMEOUT)).stdout.strip() == space

        ann = open_browser("ann")
        ann.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FAR_FUTURE_FETCH})
        ann.get(page_url(a, space))
        # Any stored time renders: no "Invalid time value", the threads are listed.
        item = wait_for(ann, "the far-future topic", lambda d: topic_item(d, "From the future"))
        assert "unknown date" in item.text and "date in the future" in item.text
        open_thread(ann, "From the future")
        wait_for(
            ann,
            "the thread's date",
            lambda d: "unknown date" in d.find_element(By.ID, "thread").text,
        )
        assert "Invalid" not in ann.find_element(By.TAG_NAME, "body").text
        ann.find_element(By.ID, "back").click()

        bob = open_browser("bob")
        bob.get(page_url(b, space))
        wait_for(bob, "bob's members panel", lambda d: member_row(d, b_id))
        # A participant sees no manager controls, but may leave.
        assert find(bob, "#member-list [data-action=remove]") is None
        assert find(bob, "#member-actions [data-action=leave]") is not None

        # Ann (the manager) makes bob a guest, then removes him after confirming.
        row = f'#member-list [data-member-id="{b_id}"]'
        select = wait_for(ann, "bob's role select", lambda d: find(d, row + " select"))
        select.find_element(By.CSS_SELECTOR, "option[value=guest]").click()
        click(ann, row + " [data-action=set-role]", "change role")
        wait_for(
            ann,
            "bob a guest",
            lambda d: (r := find(d, row + " [data-testid=role]")) is not None and r.text == "guest",
        )
        wait_for(
            bob,
            "bob told he is a guest",
            lambda d: "guest" in d.find_element(By.ID, "standing").text,
        )
        assert not bob.find_element(By.ID, "new-topic").is_displayed()

        click(ann, row + " [data-action=remove]", "remove")
        wait_for(ann, "the confirmation", lambda d: find(d, row + " [data-action=confirm-remove]"))
        assert find(ann, row + '[data-current="yes"]') is not None  # nothing happened yet
        click(ann, row + " [data-action=confirm-remove]", "confirm remove")
        note = wait_for(
            ann,
            "bob greyed",
            lambda d: find(d, row + '[data-current="no"] [data-testid=removed-note]'),
        )
        assert note.text == "removed by ann"
        wait_for(
            bob,
            "bob's page says who removed him",
            lambda d: "removed from this space by ann" in d.find_element(By.ID, "standing").text,
        )
        assert find(bob, "#member-actions [data-action=leave]") is None

        # The last manager cannot leave: the panel says why.
        click(ann, "#member-actions [data-action=leave]", "leave")
        click(ann, "#member-actions [data-action=confirm-leave]", "confirm leave")
        error = wait_for(
            ann,
            "the refusal",
            lambda d: (e := find(d, "#member-error")) is not None and e.is_displayed() and e,
        )
        assert "last manager" in error.text

        for driver in (ann, bob):
            logs: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
            # The refused leave is the one failed request (403); nothing else went wrong.
            severe = [e for e in logs if e["level"] == "SEVERE" and "/leave" not in e["message"]]
            assert severe == []


@needs_browser
def test_invite_join_rename_and_last_seen_in_two_pages(
    tmp_path: Path, open_browser: Callable[[str], webdriver.Chrome]
) -> None:
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    cli(a_home, "init", "--name", "ann")
    cli(b_home, "init", "--name", "bob")
    b_id = cli(b_home, "id", "--hex").stdout.strip()
    space = cli(a_home, "space", "create", "notes").stdout.strip()

    with running(a_home, tmp_path / "a.log") as a:
        ann = open_browser("ann")
        ann.get(page_url(a, space))
        wait_for(ann, "the space", lambda d: find(d, '#space-list a[aria-current="page"]'))

        # Ann makes a code for a participant, valid an hour: the code, its terms and a QR code.
        click(ann, "#invite > summary", "invite someone")
        ann.find_element(By.CSS_SELECTOR, "#invite-ttl option[value='3600']").click()
        click(ann, "#invite-form button[type=submit]", "make a code")
        code = wait_for(
            ann, "the code", lambda d: d.find_element(By.ID, "invite-code").get_attribute("value")
        )
        what = ann.find_element(By.ID, "invitation-what").text
        assert what.startswith("One person can join with this code, as participant, until")
        qr = wait_for(ann, "the QR code", lambda d: find(d, "#invite-qr > svg[role=img]"))
        assert qr.size["width"] >= 100
        click(ann, "#copy-code", "copy the code")
        copied = wait_for(ann, "copy feedback", lambda d: d.find_element(By.ID, "copied").text)
        assert copied in ("Copied.", "Selected: press Ctrl+C to copy.")
        screenshot(ann, "invite")

        with running(b_home, tmp_path / "b.log") as b:
            # Bob's page: no space yet; he joins with the code and lands in the space.
            bob = open_browser("bob")
            bob.get(one_time_link(b))
            wait_for(
                bob,
                "no spaces",
                lambda d: "No spaces yet." in d.find_element(By.ID, "space-list").text,
            )
            click(bob, "#join-space > summary", "join with a code")
            bob.find_element(By.ID, "join-code").send_keys(code)
            click(bob, "#join-form button[type=submit]", "join")
            wait_for(
                bob,
                "bob in the space",
                lambda d: d.find_element(By.ID, "space-title").text == "notes",
            )
            assert bob.execute_script("return location.hash").startswith(f"#space={space}")
            assert not bob.find_element(By.ID, "join-space").get_attribute("open")
            wait_for(
                bob,
                "ann in bob's list",
                lambda d: "ann" in d.find_element(By.ID, "member-list").text,
            )
            # A participant neither invites nor renames.
            assert not bob.find_element(By.ID, "invite").is_displayed()
            assert not bob.find_element(By.ID, "rename").is_displayed()

            row = f'#member-list [data-member-id="{b_id}"]'
            wait_for(ann, "bob in ann's list", lambda d: find(d, row + '[data-online="yes"]'))
            assert find(ann, row + " [data-testid=last-seen]") is None  # online: no "last seen"

            # Ann renames the space; both pages show the new name.
            click(ann, "#rename", "rename")
            field = ann.find_element(By.ID, "rename-name")
            assert field.get_attribute("value") == "notes"
            field.clear()
            field.send_keys("Team notes")
            click(ann, "#rename-form button[type=submit]", "save the name")
            for driver in (ann, bob):
                wait_for(
                    driver,
                    "the new name",
                    lambda d: (
                        d.find_element(By.ID, "space-title").text == "Team notes"
                        and "Team notes" in d.find_element(By.ID, "space-list").text
                    ),
                )
            assert ann.find_element(By.ID, "rename").is_displayed()
            screenshot(bob, "joined")

        # Bob's node stopped: Ann's page says when she last saw him.
        seen = wait_for(ann, "bob's last seen", lambda d: find(d, row + " [data-testid=last-seen]"))
        assert seen.text.startswith("last seen ")
        time = find(seen, "time")
        assert time is not None and time.get_attribute("title")  # the exact time on hover
        wait_for(ann, "bob offline", lambda d: find(d, row + '[data-online="no"]'))

        # A code that cannot be used here is refused in words in the join form (Ann's own page
        # tries the one she issued).
        click(ann, "#join-space > summary", "join with a code")
        ann.find_element(By.ID, "join-code").send_keys(code)
        click(ann, "#join-form button[type=submit]", "join again")
        error = wait_for(
            ann,
            "the refusal",
            lambda d: (
                (e := find(d, "#join-form .form-error")) is not None and e.is_displayed() and e
            ),
        )
        assert error.text
        screenshot(ann, "members")

        for driver in (ann, bob):
            logs: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
            # The refused join is the one failed request; nothing else went wrong.
            severe = [e for e in logs if e["level"] == "SEVERE" and "/api/join" not in e["message"]]
            assert severe == []


def api_call(node: NodeProcess, method: str, path: str, body: object = None) -> dict[str, Any]:
    """One request to ``node``'s API with its token (what the command line does)."""
    request = urllib.request.Request(
        f"{node.api_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token_of(node)}", "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=TIMEOUT) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


# A stand-in for the browser's Notification (granted) and a page that can be put in the
# background (window.__hidden): what the page would show is recorded in window.__notes.
BACKGROUND_AND_NOTIFICATIONS = """
window.__notes = [];
window.__hidden = false;
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notes.push([title, options.body]); }
  addEventListener() {}
};
Object.defineProperty(document, "visibilityState", {
  get: () => (window.__hidden ? "hidden" : "visible"),
});
"""

HOSTILE_BODY = (
    "**bold words** and a link https://example.com/page\n\n"
    "<script>window.xss = 1</script> <img src=x onerror='window.xss = 2'>\n\n"
    "[click](javascript:window.xss=3) <a href='javascript:window.xss=4'>a</a> @ann"
)


def body_widths(driver: WebDriver) -> list[int]:
    widths: list[int] = driver.execute_script(
        "return [...document.querySelectorAll('#thread [data-testid=body]')]"
        ".map((b) => Math.round(b.getBoundingClientRect().width))"
    )
    return widths


@needs_browser
def test_markdown_unread_search_mentions_limits_and_deep_threads(
    tmp_path: Path, open_browser: Callable[[str], webdriver.Chrome]
) -> None:
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    cli(a_home, "init", "--name", "ann")
    cli(b_home, "init", "--name", "bob")
    space = cli(a_home, "space", "create", "notes").stdout.strip()
    talk = f"/tools/discussion/api/spaces/{space}"

    with running(a_home, tmp_path / "a.log") as a, running(b_home, tmp_path / "b.log") as b:
        code = cli(a_home, "invite", "notes", "--ttl", "600").stdout.strip()
        assert cli(b_home, "join", code, "--timeout", str(TIMEOUT)).stdout.strip() == space
        hostile = api_call(b, "POST", f"{talk}/topics", {"title": "Hostile", "body": HOSTILE_BODY})
        deep = parent = api_call(a, "POST", f"{talk}/topics", {"title": "Deep", "body": "0"})["id"]
        for depth in range(1, 31):
            parent = api_call(
                a, "POST", f"{talk}/posts/{parent}/replies", {"body": f"reply {depth}"}
            )["id"]
        deepest = parent

        ann = open_browser("ann")
        ann.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": BACKGROUND_AND_NOTIFICATIONS}
        )
        ann.get(page_url(a, space))
        # bob's topic reached ann: unread, with a plain preview line.
        item = wait_for(ann, "bob's topic", lambda d: topic_item(d, "Hostile"))
        assert item.get_attribute("data-unread") == "1"
        badge = find(item, "[data-testid=unread]")
        assert badge is not None and badge.text == "1 new"
        shown = find(item, "[data-testid=preview]")
        assert shown is not None and shown.text == "bold words and a link https://example.com/page"
        deep_item = topic_item(ann, "Deep")
        assert deep_item is not None and deep_item.get_attribute("data-unread") == "0"  # hers

        # The thread: Markdown rendered, everything hostile inert, ann's mention marked.
        topic = open_thread(ann, "Hostile")
        assert topic == hostile["id"]
        body = wait_for(ann, "the body", lambda d: find(d, "#thread [data-testid=body]"))
        assert find(body, "strong") is not None and find(body, "strong").text == "bold words"  # type: ignore[union-attr]
        link = find(body, "a[href='https://example.com/page']")
        assert link is not None and link.get_attribute("rel") == "noopener noreferrer nofollow"
        links = [x.get_attribute("href") for x in body.find_elements(By.CSS_SELECTOR, "a")]
        assert links == ["https://example.com/page"]
        assert body.find_elements(By.CSS_SELECTOR, "script, img, iframe, [onerror]") == []
        assert "<script>window.xss = 1</script>" in body.text
        assert find(body, "span.mention.me") is not None
        assert ann.execute_script("return window.xss") is None
        assert find(ann, "#thread [data-testid=new]") is not None  # new when opened
        screenshot(ann, "markdown")

        # Read now: back in the list, no longer unread (the mark is ann's alone).
        ann.find_element(By.ID, "back").click()
        wait_for(ann, "read", lambda d: (t := topic_item(d, "Hostile")) is not None
                 and t.get_attribute("data-unread") == "0")  # fmt: skip

        # Search: the matching words highlighted; the result opens the thread.
        search = ann.find_element(By.ID, "search-input")
        search.send_keys("bold wor")
        click(ann, "#search-form button[type=submit]", "search")
        result = wait_for(
            ann, "a result", lambda d: find(d, "#search-results [data-testid=result]")
        )
        marks = [m.text for m in result.find_elements(By.CSS_SELECTOR, "mark")]
        assert marks == ["bold", "words"]
        assert find(ann, "#search-results [data-testid=result] + [data-testid=result]") is None
        screenshot(ann, "search")
        link = find(result, "a")
        assert link is not None
        link.click()
        wait_for(ann, "the thread from the result", lambda d: post_by_id(d, topic))

        # A 30-deep thread stays readable at 1280 px: it goes on in views of its own.
        ann.get(page_url(a, space) + f"&topic={deep}")
        wait_for(ann, "the deep thread", lambda d: post_by_id(d, deep))
        views = 0
        while True:
            widths = wait_for(ann, "bodies", lambda d: body_widths(d) or None)
            assert min(widths) >= 400, widths
            if post_by_id(ann, deepest) is not None:
                break
            more = wait_for(ann, "continue", lambda d: find(d, "#thread [data-testid=continue] a"))
            assert "Continue this thread" in more.text
            more.click()
            wait_for(ann, "the continued view", lambda d: find(d, "#continued:not([hidden])"))
            views += 1
        assert views >= 4
        assert own_body(post_by_id(ann, deepest)) == "reply 30"  # type: ignore[arg-type]
        screenshot(ann, "deep-thread")

        # Limits are counted as the node counts: 120 Japanese characters are 360 bytes.
        ann.find_element(By.ID, "back").click()
        title = wait_for(ann, "the title field", lambda d: find(d, "#topic-title"))
        title.send_keys("会" * 120)
        note = wait_for(ann, "the limit note", lambda d: find(d, "#new-topic .limit.over"))
        assert note.text.startswith("Too long by 160 bytes")
        click(ann, "#post-topic", "post")
        wait_for(ann, "the refusal", lambda d: (e := find(d, "#new-topic .form-error"))
                 is not None and e.is_displayed())  # fmt: skip
        assert topic_item(ann, "会" * 120) is None
        title.clear()

        # In the background, a post mentioning ann makes a notification; one not naming her
        # does not.
        ann.execute_script("window.__hidden = true")
        api_call(b, "POST", f"{talk}/posts/{topic}/replies", {"body": "nothing for anyone"})
        api_call(b, "POST", f"{talk}/posts/{topic}/replies", {"body": "@Ann have a look"})
        notes = wait_for(
            ann,
            "the notification",
            lambda d: d.execute_script("return window.__notes.length ? window.__notes : null"),
        )
        assert notes == [["bob mentioned you in notes", "@Ann have a look"]]

        logs: list[dict[str, str]] = ann.get_log("browser")  # type: ignore[no-untyped-call]
        assert [e for e in logs if e["level"] == "SEVERE"] == []


def task_titles(driver: WebDriver) -> list[tuple[str, bool]]:
    shown: list[tuple[str, bool]] = []
    for item in driver.find_elements(By.CSS_SELECTOR, "#tasks [data-testid=task]"):
        title = find(item, "[data-testid=title]")
        box = find(item, "input[type=checkbox]")
        if title is not None and box is not None:
            shown.append((title.text, box.is_selected()))
    return shown


@needs_browser
def test_a_plugin_page_works_live_across_two_nodes(
    tmp_path: Path, open_browser: Callable[[str], webdriver.Chrome]
) -> None:
    env = plugin_env(plugin_site(tmp_path / "site"))
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    cli(a_home, "init", "--name", "ann", env=env)
    cli(b_home, "init", "--name", "bob", env=env)
    space = cli(a_home, "space", "create", "chores", "--tool", "tasks", env=env).stdout.strip()

    with (
        running(a_home, tmp_path / "a.log", env=env) as a,
        running(b_home, tmp_path / "b.log", env=env) as b,
    ):
        code = cli(a_home, "invite", "chores", "--ttl", "600", env=env).stdout.strip()
        assert cli(b_home, "join", code, "--timeout", str(TIMEOUT), env=env).stdout.strip() == space

        # Ann's page for the space links to the tool's page; she opens it and adds a task.
        ann = open_browser("ann")
        ann.get(page_url(a, space))
        link = wait_for(ann, "the tool link", lambda d: find(d, "#tool-links a[data-tool=tasks]"))
        assert link.text == "Tasks"
        link.click()
        wait_for(ann, "the tasks page", lambda d: d.find_element(By.ID, "space-title").text
                 == "Tasks of chores")  # fmt: skip
        wait_for(ann, "live", lambda d: find(d, "#conn[data-state=live]"))
        ann.find_element(By.ID, "title").send_keys("buy milk")
        click(ann, "#add-form button[type=submit]", "add")
        wait_for(ann, "the task", lambda d: task_titles(d) == [("buy milk", False)])

        # Bob's page (his own node) shows it, live; he marks it done; Ann's page follows.
        bob = open_browser("bob")
        bob.get(one_time_link(b))
        wait_for(bob, "bob's main page", lambda d: find(d, '#space-list a[aria-current="page"]'))
        bob.get(f"{b.api_url}/tools/tasks/#space={space}")
        wait_for(bob, "the task at bob's", lambda d: task_titles(d) == [("buy milk", False)])
        ann.find_element(By.ID, "title").send_keys("take out the bins")
        click(ann, "#add-form button[type=submit]", "add another")
        wait_for(bob, "the second task, live", lambda d: len(task_titles(d)) == 2)
        box = wait_for(bob, "the milk's box", lambda d: find(d, "#tasks [data-testid=task] input"))
        box.click()
        wait_for(ann, "done at ann's, live", lambda d: ("buy milk", True) in task_titles(d))
        who = Select(bob.find_element(By.CSS_SELECTOR, "#tasks [data-testid=task] select"))
        who.select_by_visible_text("ann")
        wait_for(ann, "assigned at ann's", lambda d: any(
            s.first_selected_option.text == "ann"
            for s in (Select(x) for x in d.find_elements(By.CSS_SELECTOR, "#tasks select"))
        ))  # fmt: skip
        screenshot(ann, "tasks-plugin")
        for driver in (ann, bob):
            logs: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
            assert [e for e in logs if e["level"] == "SEVERE"] == []
