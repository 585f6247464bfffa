"""The gallery: filters and search kept in the URL, a share link opened signed out, deleting."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
from playwright.sync_api import Dialog, Page, expect

from tests.e2e.conftest import Contexts, LiveServer, Screenshots, sign_in_with_key

TILES = "ul.grid li.tile"
TILE_LINKS = f"{TILES} a[href^='/images/']"


def test_filter_and_search_the_gallery(
    page: Page, server: LiveServer, screenshots: Screenshots
) -> None:
    key = server.new_user("gallery-bea")  # a gallery of this test's images only
    torch = server.make_image(key, frame="onboarding/lighting-the-torch", seed=1)
    training = server.make_image(key, frame="onboarding/training", seed=2)
    notes = server.make_image(
        key, pose="standing-ready", seed=3, scene_notes="a heron watching from a rock"
    )
    sign_in_with_key(page, key)
    page.goto("/gallery")
    expect(page.locator(TILES)).to_have_count(3)
    expect(page.locator(f"{TILES} img")).to_have_count(3)  # thumbnails, all done
    screenshots.save(page, "gallery")

    # a filter from the form: the URL carries it, and only that frame's image is left
    page.select_option("#f-frame", "onboarding/training")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(TILES)).to_have_count(1)
    expect(page.locator(TILE_LINKS)).to_have_attribute("href", f"/images/{training}")
    query = parse_qs(urlsplit(page.url).query)
    assert query["frame"] == ["onboarding/training"]
    expect(page.locator("#f-frame")).to_have_value("onboarding/training")  # the form remembers
    screenshots.save(page, "gallery-filtered")

    # search words in the prompt, together with another filter, then on its own
    page.select_option("#f-frame", "")
    page.fill("#q", "heron")
    page.select_option("#f-sort", "oldest")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(TILES)).to_have_count(1)
    expect(page.locator(TILE_LINKS)).to_have_attribute("href", f"/images/{notes}")
    query = parse_qs(urlsplit(page.url).query)
    assert query["q"] == ["heron"]
    assert query["sort"] == ["oldest"]
    expect(page.locator("#q")).to_have_value("heron")
    screenshots.save(page, "gallery-search")

    # the URL alone reproduces the view: reload it, and share it with yourself
    filtered = page.url
    page.reload()
    expect(page.locator(TILES)).to_have_count(1)
    page.goto("/gallery?q=nothing-matches-this&sort=oldest")
    expect(page.locator("p.empty")).to_contain_text("No image matches these filters.")
    page.goto(filtered)
    expect(page.locator(TILES)).to_have_count(1)

    # oldest first, with no filter: the three in the order they were made
    page.goto("/gallery?sort=oldest")
    hrefs = page.locator(TILE_LINKS).evaluate_all("links => links.map(a => a.pathname)")
    assert hrefs == [f"/images/{torch}", f"/images/{training}", f"/images/{notes}"]
    page.get_by_role("link", name="Clear").click()
    expect(page).to_have_url(re.compile(r"/gallery$"))
    expect(page.locator(TILES)).to_have_count(3)


def test_a_share_link_opens_signed_out(
    page: Page, contexts: Contexts, server: LiveServer, screenshots: Screenshots
) -> None:
    key = server.new_user("share-caio")
    image_id = server.make_image(key, frame="onboarding/the-invitation", seed=5)
    sign_in_with_key(page, key)
    page.goto(f"/images/{image_id}")
    page.get_by_role("button", name="Create share link").click()
    field = page.locator("#share-url")
    expect(field).to_be_visible()
    link = field.input_value()
    assert link.startswith(f"{server.url}/s/"), link
    expect(page.locator("ul.shares li")).to_have_count(1)
    screenshots.save(page, "image-shared")

    # someone else, with no session at all, opens the link: the image itself
    stranger = contexts.new().new_page()
    answer = stranger.goto(link)
    assert answer is not None
    assert answer.status == 200
    assert answer.headers["content-type"] == "image/webp"
    picture = stranger.locator("img")
    expect(picture).to_be_visible()
    assert stranger.evaluate("() => document.querySelector('img').naturalWidth") > 0
    screenshots.save(stranger, "share-link-signed-out")
    # ... and that stranger is no further in: the studio still asks them to sign in
    stranger.goto(f"/images/{image_id}")
    expect(stranger).to_have_url(re.compile(r"/login\?next="))

    # revoking the link closes it
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("ul.shares li button")).to_have_count(0)
    assert httpx.get(link, timeout=10).status_code == 403


def test_delete_asks_first_and_then_removes_the_image(
    page: Page, server: LiveServer, screenshots: Screenshots
) -> None:
    key = server.new_user("delete-duda")
    kept = server.make_image(key, frame="onboarding/training", seed=6)
    doomed = server.make_image(key, frame="onboarding/wall-of-progress", seed=7)
    sign_in_with_key(page, key)
    page.goto(f"/images/{doomed}")
    delete = page.get_by_role("button", name="Delete", exact=True)

    # the first time, the question is declined: nothing happens
    messages: list[str] = []

    def decline(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", decline)
    delete.click()
    expect(page).to_have_url(re.compile(f"/images/{doomed}$"))
    assert messages == ["Delete this image? This cannot be undone."]

    # then accepted: back to the gallery, without it
    page.once("dialog", lambda dialog: dialog.accept())
    delete.click()
    expect(page).to_have_url(re.compile(r"/gallery$"))
    expect(page.locator(TILES)).to_have_count(1)
    expect(page.locator(TILE_LINKS)).to_have_attribute("href", f"/images/{kept}")
    screenshots.save(page, "gallery-after-delete")
    gone = page.goto(f"/images/{doomed}")
    assert gone is not None
    assert gone.status == 404
    expect(page.get_by_role("heading", name="Nothing here.")).to_be_visible()
