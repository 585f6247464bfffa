"""The storyboard and admin pages.

While either page is still missing from the studio (it answers 404), its test is reported as an
expected failure naming the page, so the suite stays green; once the page exists, it must pass.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, Response, expect

from caverna.brand.registry import DEFAULT_PACK_ID, PackRegistry
from tests.e2e.conftest import LiveServer, Screenshots, sign_in, sign_in_with_key

GENERATE_ALL = re.compile(r"(generate|gerar)\b.*\b(all|every|todos|todas|tudo)\b", re.IGNORECASE)


def _visit(page: Page, path: str, what: str) -> Response:
    answer = page.goto(path)
    assert answer is not None
    assert answer.status != 404, f"the {what} page ({path}) is missing"
    return answer


def onboarding_titles() -> list[str]:
    pack = PackRegistry([]).get(DEFAULT_PACK_ID)
    return [
        entry.frame.title.en for ref, entry in pack.frames.items() if ref.startswith("onboarding/")
    ]


def test_run_the_onboarding_storyboard(
    page: Page, server: LiveServer, screenshots: Screenshots
) -> None:
    sign_in_with_key(page, server.new_user("storyboard-fabi"))
    answer = _visit(page, "/storyboard", "storyboard")
    assert answer.status == 200
    titles = onboarding_titles()
    assert len(titles) == 8
    main = page.locator("main")
    for title in titles:
        expect(main.get_by_text(title, exact=True).first).to_be_visible()
    generate_all = page.get_by_role("button", name=GENERATE_ALL)
    expect(generate_all).to_be_visible()
    screenshots.save(page, "storyboard")

    # every frame at once: the page follows them until all eight pictures are there
    generate_all.click()
    expect(page).to_have_url(re.compile(r"/storyboard\?sequence=[0-9a-f-]{36}$"))
    pictures = main.locator("img")
    expect(pictures).to_have_count(8, timeout=60_000)
    for number, title in enumerate(titles, start=1):
        expect(main.get_by_alt_text(f"{number}. {title}")).to_be_visible()
    assert page.evaluate(
        "() => [...document.querySelectorAll('main img')]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    screenshots.save(page, "storyboard-done")


def test_admin_pages_list_the_users_for_an_admin(
    page: Page, server: LiveServer, screenshots: Screenshots
) -> None:
    sign_in_with_key(page, server.admin_key)
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    answer = _visit(page, "/admin", "admin")
    assert answer.status == 200
    screenshots.save(page, "admin")
    page.locator("main a[href='/admin/users']").first.click()
    expect(page).to_have_url(re.compile(r"/admin/users$"))
    users = page.locator("main table").first
    expect(users).to_be_visible()
    for user in ("admin", "ana"):
        expect(users.locator("tr", has_text=re.compile(rf"^\s*{user}\b"))).to_have_count(1)
    screenshots.save(page, "admin-users")


def test_admin_pages_are_forbidden_to_a_user(page: Page, screenshots: Screenshots) -> None:
    sign_in(page)
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    for path in ("/admin", "/admin/users"):
        answer = _visit(page, path, "admin")
        assert answer.status == 403, path
        expect(page.locator("main table")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("This page is for admins.")
    screenshots.save(page, "admin-403-for-a-user")
