"""Signing in, then generating with live validation and watching the image arrive."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, Route, expect

from tests.e2e.conftest import PASSWORD, Screenshots, sign_in


def test_sign_in_sends_back_to_the_page_asked_for(page: Page, screenshots: Screenshots) -> None:
    page.goto("/gallery?sort=oldest")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fgallery%3Fsort%3Doldest$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshots.save(page, "login")

    page.fill("#user", "ana")
    page.fill("#password", "not the password")
    page.click("form[action='/login'] button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("did not work")
    expect(page.locator("#user")).to_have_value("ana")
    screenshots.save(page, "login-failed")

    page.fill("#password", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    expect(page).to_have_url(re.compile(r"/gallery\?sort=oldest$"))
    expect(page.locator("header .who")).to_have_text("ana")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)  # not an admin

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/generate")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fgenerate$"))


def test_generate_with_live_validation_then_watch_the_progress(
    page: Page, screenshots: Screenshots
) -> None:
    sign_in(page)
    page.goto("/generate")
    expect(page.get_by_role("heading", name="Generate an image")).to_be_visible()
    torch = page.locator("label[data-kind='prop'][data-option='torch']")
    torch_box = torch.locator("input[type=checkbox]")
    status = page.locator("#problems")
    submit = page.locator("#submit")
    expect(status).to_have_text("Ready to generate.")  # the pack's defaults are valid

    # arms crossed leave no hand free: the torch (one hand) is ruled out, and says why
    page.select_option("#pose", "arms-crossed")
    expect(torch_box).to_be_disabled()
    expect(torch).to_have_class(re.compile(r"\bdisabled\b"))
    reason = torch.locator(".reason")
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("arms-crossed")
    expect(reason).to_contain_text("hand")
    torch.locator("span").click(force=True)  # clicking its label does not tick it
    expect(torch_box).not_to_be_checked()
    # a worn prop occupies no hand, so it stays available
    expect(page.locator("label[data-option='wall-torch'] input")).to_be_enabled()
    screenshots.save(page, "generate-prop-ruled-out")

    # a pose with free hands makes the torch available again; ticking it is valid
    page.select_option("#pose", "standing-ready")
    expect(torch_box).to_be_enabled()
    expect(reason).to_have_text("")
    torch_box.check()
    expect(status).to_have_text("Ready to generate.")
    expect(page.locator("#prompt")).to_contain_text("torch")
    # ... and now, the other way round, arms crossed is the option that is ruled out
    crossed = page.locator("#pose option[value='arms-crossed']")
    expect(crossed).to_be_disabled()
    expect(crossed).to_contain_text("(unavailable)")
    expect(crossed).to_have_attribute("title", re.compile("hand"))
    # a disabled option's title is out of reach of a keyboard: its reason is listed too
    unavailable = page.locator("#pose-unavailable")
    expect(unavailable).to_be_visible()
    unavailable.locator("summary").press("Enter")
    expect(unavailable.locator("li", has_text="Arms crossed")).to_contain_text("hand")

    # an invalid value is explained and blocks the button until it is fixed
    page.fill("#seed", "-3")
    expect(status.locator(".error")).to_have_text("Fix these first:")
    expect(status.locator("li")).to_contain_text("Seed")
    expect(submit).to_be_disabled()
    screenshots.save(page, "generate-problem")
    page.fill("#seed", "42")
    expect(status).to_have_text("Ready to generate.")
    expect(submit).to_be_enabled()
    screenshots.save(page, "generate-ready")

    # submit: the image page shows the progress bar, then the image replaces it
    answers: list[dict[str, Any]] = []

    def follow(route: Route) -> None:  # the page's status polls, seen on their way
        response = route.fetch()
        answers.append(response.json())
        route.fulfill(response=response)

    page.route(re.compile(r"/web/images/[0-9a-f-]+/status$"), follow)
    with page.expect_navigation(url=re.compile(r"/images/[0-9a-f-]{36}$")) as landed:
        submit.click()
    document = landed.value
    assert document is not None
    first = document.text()
    # the worker has not finished when the page is drawn (the provider takes 300 ms or more)
    assert '<progress id="progress"' in first, first
    assert re.search(r'id="status-text">(Queued|Generating)<', first), first
    screenshots.save(page, "image-in-progress")  # the bar, unless the image was quicker
    image = page.locator("#detail figure img")
    expect(image).to_be_visible(timeout=30_000)  # the page reloads itself once it is done
    expect(page.locator("#progress")).to_have_count(0)
    expect(page.locator("#detail dl")).to_contain_text("Done")
    assert page.evaluate("img => img.complete && img.naturalWidth > 0", image.element_handle())
    expect(page.locator("#detail dl")).to_contain_text("torch")
    expect(page.locator("#detail dl")).to_contain_text("42")
    # what the bar was fed: the status polls, rising, the last one the completion
    assert answers, "the page never asked for the status"
    assert answers[-1]["status"] == "completed", answers
    assert all(a["status"] in ("queued", "processing") for a in answers[:-1]), answers
    progress = [float(answer["progress"]) for answer in answers]
    assert progress == sorted(progress), progress
    screenshots.save(page, "image-done")
