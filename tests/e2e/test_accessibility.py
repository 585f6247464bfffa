"""Contrast of every visible text on every page, and keyboard use of the busiest pages.

Both run in a real browser against the live server, at the phone and desktop widths the studio
is designed for, in both languages' longest forms where it matters (pt-BR labels are longer).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import CDPSession, Page, expect

from tests.e2e.a11y import FOCUSED_JS, INTERACTIVE_JS, contrasts
from tests.e2e.conftest import Contexts, LiveServer, Screenshots, sign_in_with_key

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
VIEWPORTS = {"390": PHONE, "1440": DESKTOP}
SEQUENCE_SECONDS = 60.0
MAX_TABS = 250  # more stops than either page has: the walk ends when focus comes back round


@dataclass(frozen=True)
class Fixtures:
    """A user with a finished image and a finished storyboard run, for pages with content."""

    key: str
    image_id: str
    sequence_id: str


@pytest.fixture(scope="module")
def made(server: LiveServer) -> Fixtures:
    key = server.new_user("a11y-gil")
    image_id = server.make_image(key, frame="onboarding/lighting-the-torch", seed=11)
    with server.api(key) as client:
        answer = client.post(
            "/api/v1/sequences/generate", json={"sequence": "onboarding", "seed": 4}
        )
        assert answer.status_code == 202, answer.text
        sequence_id = str(answer.json()["sequence_id"])
        deadline = time.monotonic() + SEQUENCE_SECONDS
        while time.monotonic() < deadline:
            status = client.get(f"/api/v1/sequences/{sequence_id}").json()
            if status["status"] not in ("queued", "processing"):
                break
            time.sleep(0.2)  # polling a remote process: there is no event to wait on
        else:
            raise AssertionError(f"the storyboard did not finish in {SEQUENCE_SECONDS} s")
    assert status["status"] == "completed", status
    return Fixtures(key, image_id, sequence_id)


def user_pages(made: Fixtures) -> dict[str, str]:
    return {
        "generate": "/generate",
        "storyboard": f"/storyboard?sequence={made.sequence_id}",
        "gallery": "/gallery",
        "gallery-empty": "/gallery?q=nothing-matches-this",
        "gallery-problem": "/gallery?pose=moonwalk",
        "image": f"/images/{made.image_id}",
    }


ADMIN_PAGES = {
    "admin": "/admin",
    "admin-users": "/admin/users",
    "admin-user": "/admin/users/ana",
    "admin-user-notice": "/admin/users/ana?done=quota_saved",
    "admin-audit-problem": "/admin/audit?since=not-a-date",
    "admin-providers": "/admin/providers",
    "admin-queue": "/admin/queue",
    "admin-bulk": "/admin/bulk",
    "admin-audit": "/admin/audit",
    "admin-usage": "/admin/usage",
    "admin-analytics": "/admin/analytics",
    "admin-analytics-problem": "/admin/analytics?by=colour",
}


def failures(page: Page) -> list[str]:
    measured = contrasts(page)
    assert measured, f"{page.url}: no text measured"
    return [f"{page.url} {found}" for found in measured if found.ratio < found.required]


def settle(page: Page) -> None:
    """Scripts ran and the live checks answered: the text measured is what a reader sees."""
    page.wait_for_load_state("load")
    if page.locator("#problems").count():
        expect(page.locator("#problems")).not_to_be_empty()


@pytest.mark.parametrize("width", sorted(VIEWPORTS))
def test_every_text_meets_wcag_contrast(
    contexts: Contexts,
    server: LiveServer,
    made: Fixtures,
    screenshots: Screenshots,
    width: str,
) -> None:
    viewport = VIEWPORTS[width]
    problems: list[str] = []

    signed_out = contexts.new(viewport=viewport).new_page()
    signed_out.goto("/login")
    problems += failures(signed_out)
    signed_out.fill("#user", "nobody")
    signed_out.fill("#password", "wrong")
    signed_out.click("form[action='/login'] button[type=submit]")
    expect(signed_out.get_by_role("alert")).to_be_visible()  # the error state, in red
    problems += failures(signed_out)

    for locale in ("en-US", "pt-BR"):
        page = contexts.new(viewport=viewport, locale=locale).new_page()
        sign_in_with_key(page, made.key)
        for name, path in user_pages(made).items():
            page.goto(path)
            settle(page)
            problems += failures(page)
            if locale == "pt-BR":
                screenshots.save(page, f"contrast-{name}-{width}")
        # the generate page's error states: a ruled-out prop with its reason, a problem list
        page.goto("/generate")
        settle(page)
        page.select_option("#pose", "arms-crossed")
        expect(page.locator("label[data-option='torch'] .reason")).not_to_be_empty()
        page.fill("#seed", "-3")
        expect(page.locator("#problems .error")).to_be_visible()
        problems += failures(page)

    admin = contexts.new(viewport=viewport).new_page()
    sign_in_with_key(admin, server.admin_key)
    for name, path in ADMIN_PAGES.items():
        admin.goto(path)
        settle(admin)
        problems += failures(admin)
        screenshots.save(admin, f"contrast-{name}-{width}")
    admin.goto("/admin/users/nobody-here")  # the not-found state
    problems += failures(admin)
    assert not problems, "text below WCAG AA contrast:\n" + "\n".join(problems)


# -- keyboard ------------------------------------------------------------------------------------


def accessible_name(cdp: CDPSession, page: Page) -> str:
    """The name the browser gives the focused element to assistive technology."""
    handle = cdp.send(
        "Runtime.evaluate", {"expression": "document.activeElement", "returnByValue": False}
    )
    object_id = handle["result"]["objectId"]
    tree = cdp.send(
        "Accessibility.getPartialAXTree", {"objectId": object_id, "fetchRelatives": False}
    )
    for node in tree["nodes"]:
        if not node.get("ignored"):
            return str((node.get("name") or {}).get("value") or "").strip()
    return ""


def tab_through(page: Page) -> Iterator[dict[str, Any]]:
    """Each stop of the Tab key from the top of the page, until focus comes back round."""
    cdp = page.context.new_cdp_session(page)
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); }")
    seen: set[int] = set()
    last = None
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        focused: dict[str, Any] | None = page.evaluate(FOCUSED_JS)
        if focused is None:
            continue  # the browser's own chrome, between the end and the start again
        if focused["index"] == last:
            continue  # a date field's day, month and year are stops of one control
        if focused["index"] in seen:
            return
        last = focused["index"]
        seen.add(focused["index"])
        focused["name"] = accessible_name(cdp, page)
        yield focused
    raise AssertionError(f"focus did not come back round in {MAX_TABS} presses of Tab")


def check_keyboard(page: Page) -> None:
    controls = page.evaluate(INTERACTIVE_JS)
    assert controls, page.url
    stops = list(tab_through(page))
    reached = {stop["index"] for stop in stops}
    missed = [c for c in controls if c["index"] not in reached]
    assert not missed, f"{page.url}: not reachable with Tab: {missed}"
    unnamed = [s for s in stops if not s["name"]]
    assert not unnamed, f"{page.url}: focusable without an accessible name: {unnamed}"
    unmarked = [s for s in stops if not s["indicator"]]
    assert not unmarked, f"{page.url}: no visible focus indicator: {unmarked}"
    off_screen = [s for s in stops if not s["onScreen"]]
    assert not off_screen, f"{page.url}: focused while off screen: {off_screen}"
    # the focus order is the reading order: no positive tabindex jumps around the page
    order = [stop["index"] for stop in stops]
    assert order == sorted(order), f"{page.url}: focus order differs from the page's: {order}"
    assert "skip" in stops[0]["cls"].split(), f"{page.url}: the first stop is {stops[0]}"


@pytest.mark.parametrize("width", sorted(VIEWPORTS))
def test_keyboard_reaches_every_control_with_a_name_and_a_visible_focus(
    contexts: Contexts, made: Fixtures, width: str
) -> None:
    page = contexts.new(viewport=VIEWPORTS[width], locale="pt-BR").new_page()
    sign_in_with_key(page, made.key)
    page.goto("/generate")
    settle(page)
    expect(page.locator("#problems")).to_have_text("Pronto para gerar.")
    check_keyboard(page)

    page.goto("/gallery")
    expect(page.locator("ul.grid li.tile").first).to_be_visible()
    check_keyboard(page)


# -- the measures themselves ---------------------------------------------------------------------

SPECIMEN = """
<!doctype html><html lang="en"><body style="background:#fff;margin:0">
<a class="skip" href="#x" style="position:absolute;left:-999px">Skip</a>
<p id="grey" style="color:#777">4.48 to 1: just short</p>
<p id="big" style="color:#777;font-size:24px">large text needs only 3 to 1</p>
<div style="background:rgba(0,0,0,.7)"><p id="veiled" style="color:#000">on a dark veil</p></div>
<p id="faded" style="color:#000;opacity:.3">faded to grey</p>
<input id="hint" placeholder="a faint hint" style="color:#000">
<style>#hint::placeholder{color:#bbb}</style>
<button id="nameless" style="outline:none"><svg width="10" height="10"></svg></button>
<span id="unreachable" onclick="void 0" role="button">no tabindex</span>
<a href="#x">fine</a>
</body></html>
"""


def test_the_measures_flag_low_contrast_and_unusable_controls(contexts: Contexts) -> None:
    page = contexts.new().new_page()
    page.set_content(SPECIMEN)
    measured = {c.element: c for c in contrasts(page)}
    low = {name for name, c in measured.items() if c.ratio < c.required}
    assert low == {"p#grey", "p#veiled", "p#faded", "input#hint"}, measured
    assert measured["p#grey"].ratio == pytest.approx(4.48, abs=0.01)
    assert measured["p#big"].required == 3
    assert measured["p#veiled"].bg == "rgb(77, 77, 77)"  # 70 % black over white
    assert "a.skip" not in measured  # parked off screen until focused
    with pytest.raises(AssertionError, match="without an accessible name"):
        check_keyboard(page)


# -- layout shift --------------------------------------------------------------------------------

LAYOUT_SHIFT_JS = r"""
() => new Promise((resolve) => {
  let total = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if (!entry.hadRecentInput) total += entry.value;
  });
  observer.observe({ type: "layout-shift", buffered: true });
  // buffered entries arrive with the next frames: two of them, then the sum so far
  const finish = () => { observer.disconnect(); resolve(total); };
  requestAnimationFrame(() => requestAnimationFrame(finish));
})
"""
# every picture on screen has arrived (lazy ones further down load as the page scrolls)
IN_VIEW_DONE_JS = r"""
() => [...document.images].every((img) => {
  const rect = img.getBoundingClientRect();
  const onScreen = rect.bottom > 0 && rect.top < window.innerHeight;
  return img.complete || !onScreen;
})
"""
MAX_SCREENS = 40


def scroll_through(page: Page) -> None:
    """Down the page a screen at a time, each screen's pictures loaded before the next."""
    page.evaluate("() => window.scrollTo(0, 0)")
    for _ in range(MAX_SCREENS):
        page.wait_for_function(IN_VIEW_DONE_JS)
        at_end = page.evaluate(
            "() => { const before = window.scrollY; window.scrollBy(0, window.innerHeight);"
            " return window.scrollY === before; }"
        )
        if at_end:
            return
    raise AssertionError(f"{page.url} is longer than {MAX_SCREENS} screens")


@pytest.mark.parametrize("width", sorted(VIEWPORTS))
def test_pages_with_pictures_do_not_shift_while_they_load(
    contexts: Contexts, made: Fixtures, width: str
) -> None:
    page = contexts.new(viewport=VIEWPORTS[width]).new_page()
    sign_in_with_key(page, made.key)
    for path in (
        "/gallery",
        f"/images/{made.image_id}",
        f"/storyboard?sequence={made.sequence_id}",
        "/generate",
    ):
        page.goto(path)
        scroll_through(page)
        shift = float(page.evaluate(LAYOUT_SHIFT_JS))
        # 0.1 is "good" for Core Web Vitals; pictures with their sizes set shift nothing
        assert shift < 0.01, f"{path} at {width} px: cumulative layout shift {shift:.3f}"
