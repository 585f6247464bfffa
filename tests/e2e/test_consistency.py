"""Brand consistency in a real browser: the report on the image page (the panel fetches itself
while the report is pending), the storyboard's continuity panel after a run, and the template
analytics for an admin."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

from tests.e2e.conftest import Contexts, LiveServer, Screenshots, sign_in, sign_in_with_key

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
REPORT_MS = 30_000
SEQUENCE_SECONDS = 60.0


def no_sideways_scroll(page: Page) -> None:
    """The page fits its width: wide tables scroll inside their own box, never the page."""
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"{page.url}: {overflow} px wider than the screen"


def test_the_image_page_shows_its_consistency_report(
    contexts: Contexts, server: LiveServer, screenshots: Screenshots
) -> None:
    key = server.new_user("report-iara")
    image_id = server.make_image(key, frame="onboarding/lighting-the-torch", seed=17)
    for name, viewport in (("1440", DESKTOP), ("390", PHONE)):
        page = contexts.new(viewport=viewport).new_page()
        sign_in_with_key(page, key)
        page.goto(f"/images/{image_id}")
        report = page.locator("#consistency")
        expect(report.get_by_role("heading", name="Brand consistency")).to_be_visible()
        # just completed: "pending" until the pass has run, then the panel replaces itself
        expect(page.locator("#consistency-overall")).to_be_visible(timeout=REPORT_MS)
        expect(report).to_have_attribute("data-pending", "false")
        score = page.locator("#consistency-overall .cs-score").inner_text()
        assert re.fullmatch(r"[01]\.\d\d", score), score
        for check in ("palette", "lighting", "format", "duplicates"):
            expect(page.locator(f"#check-{check}")).to_be_visible()
        swatches = page.locator("#check-palette .swatch")
        assert swatches.count() >= 2
        expect(page.locator("#check-lighting")).to_contain_text("Key light side")
        expect(page.get_by_label("Reason")).to_be_visible()
        no_sideways_scroll(page)
        report.scroll_into_view_if_needed()
        screenshots.save(page, f"consistency-image-{name}")


def test_the_storyboard_shows_continuity_after_a_run(
    page: Page, server: LiveServer, screenshots: Screenshots
) -> None:
    key = server.new_user("report-davi")
    with server.api(key) as client:
        answer = client.post(
            "/api/v1/sequences/generate", json={"sequence": "onboarding", "seed": 6}
        )
        assert answer.status_code == 202, answer.text
        sequence_id = str(answer.json()["sequence_id"])
    sign_in_with_key(page, key)
    page.goto(f"/storyboard?sequence={sequence_id}")
    panel = page.locator(f"#continuity-{sequence_id}")
    expect(panel.get_by_role("heading", name="Continuity")).to_be_visible()
    # the frames are made and measured while the page is open: the panel follows by itself
    expect(panel).to_have_attribute("data-pending", "false", timeout=SEQUENCE_SECONDS * 1000)
    rows = panel.locator("tbody tr")
    expect(rows).to_have_count(8)
    expect(panel.locator(".cs-breaks-summary")).to_be_visible()
    for index in range(8):
        score = rows.nth(index).locator("td").first.inner_text()
        assert re.fullmatch(r"[01]\.\d\d", score), (index, score)
    sheet = panel.get_by_role("link", name="Contact sheet with scores (PNG)")
    expect(sheet).to_be_visible()
    href = sheet.get_attribute("href")
    assert href == f"/storyboard/{sequence_id}/report.png"
    png = page.request.get(href)
    assert png.status == 200
    assert png.headers["content-type"] == "image/png"
    no_sideways_scroll(page)
    panel.scroll_into_view_if_needed()
    screenshots.save(page, "consistency-storyboard")


def test_the_analytics_page_for_an_admin(
    contexts: Contexts, server: LiveServer, screenshots: Screenshots
) -> None:
    key = server.new_user("report-rui")
    image_id = server.make_image(key, pose="standing-ready", seed=12)
    with server.api(server.admin_key) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a remote process: no event to wait on
            if client.get(f"/api/v1/images/{image_id}").json()["consistency"] is not None:
                break
            time.sleep(0.2)
        answer = client.put(f"/api/v1/images/{image_id}/review", json={"verdict": "approved"})
        assert answer.status_code == 200, answer.text

    for name, viewport in (("1440", DESKTOP), ("390", PHONE)):
        page = contexts.new(viewport=viewport).new_page()
        sign_in_with_key(page, server.admin_key)
        page.goto("/admin")
        page.locator(".admin-nav a[href='/admin/analytics']").click()
        expect(page).to_have_url(re.compile(r"/admin/analytics$"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Template analytics")
        expect(page.locator(".admin-nav a[aria-current='page']")).to_have_text("Analytics")
        table = page.locator("main table").first
        expect(table).to_be_visible()
        chart = page.locator(".an-chart img")
        expect(chart).to_be_visible()
        page.wait_for_function(
            "() => { const img = document.querySelector('.an-chart img');"
            " return img && img.complete && img.naturalWidth > 0; }"
        )
        # group by provider only: one row per provider
        page.uncheck("#by-template_version")
        page.uncheck("#by-pose")
        page.uncheck("#by-frame")
        page.uncheck("#by-variant")
        page.get_by_role("button", name="Show", exact=True).click()
        expect(page).to_have_url(re.compile(r"by=provider$"))
        expect(table.locator("tbody tr")).to_have_count(1)
        expect(table.locator("tbody tr th")).to_have_text("preview")
        no_sideways_scroll(page)
        screenshots.save(page, f"consistency-analytics-{name}")


def test_the_analytics_page_is_forbidden_to_a_user(page: Page) -> None:
    sign_in(page)
    answer = page.goto("/admin/analytics")
    assert answer is not None
    assert answer.status == 403
    expect(page.locator("main")).to_contain_text("This page is for admins.")
