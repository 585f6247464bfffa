"""Language, keyboard use and the phone layout of the studio."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.e2e.conftest import Contexts, LiveServer, Screenshots, sign_in, sign_in_with_key

PHONE = {"width": 390, "height": 844}


def test_switch_the_language_and_keep_it(page: Page, screenshots: Screenshots) -> None:
    sign_in(page)
    page.goto("/gallery")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your images")
    page.locator(".lang a[lang='pt-BR']").click()
    expect(page).to_have_url(re.compile(r"/gallery$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Suas imagens")
    expect(page.locator("html")).to_have_attribute("lang", "pt-BR")
    expect(page.locator(".lang a[lang='pt-BR']")).to_have_attribute("aria-current", "true")
    screenshots.save(page, "gallery-pt-BR")

    # the choice is a cookie: other pages, and the pack's own labels, follow it
    page.goto("/generate")
    expect(page.get_by_role("heading", level=1)).to_have_text("Gerar uma imagem")
    expect(page.locator("label[for='outfit']")).to_have_text("Roupa")
    expect(page.locator("#frame option[value='onboarding/the-invitation']")).to_contain_text(
        "O convite"
    )
    expect(page.locator("#problems")).to_have_text("Pronto para gerar.")  # the script's words too
    screenshots.save(page, "generate-pt-BR")

    page.locator(".lang a[lang='en']").click()
    expect(page).to_have_url(re.compile(r"/generate$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Generate an image")
    expect(page.locator("#frame option[value='onboarding/the-invitation']")).to_contain_text(
        "The invitation"
    )
    expect(page.locator("html")).to_have_attribute("lang", "en")


def test_keyboard_reaches_the_skip_link_first_and_the_pickers_are_labelled(page: Page) -> None:
    sign_in(page)
    page.goto("/generate")
    expect(page.locator("#problems")).to_have_text("Ready to generate.")
    page.keyboard.press("Tab")
    skip = page.locator("a.skip")
    expect(skip).to_be_focused()
    expect(skip).to_have_text("Skip to content")
    assert skip.is_visible()
    box = skip.bounding_box()
    assert box is not None
    assert box["x"] >= 0  # moved on screen when focused, not left off to the side
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()

    # the pose picker has a visible label tied to it, and the keyboard can use it
    pose = page.get_by_label("Pose", exact=True)
    expect(pose).to_have_attribute("id", "pose")
    expect(page.locator("label[for='pose']")).to_be_visible()
    expect(page.get_by_role("combobox", name="Pose", exact=True)).to_have_count(1)
    pose.focus()
    page.keyboard.press("ArrowDown")  # from "Default" to the first pose
    expect(pose).not_to_have_value("")
    expect(page.locator("#pose-help")).not_to_be_empty()  # its description, read out politely


def _no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} scrolls sideways: {width} px wide"


def test_phone_viewport_fits_without_scrolling_sideways(
    contexts: Contexts, server: LiveServer, screenshots: Screenshots
) -> None:
    key = server.new_user("phone-eva")
    image_id = server.make_image(key, frame="onboarding/carving-the-goals", seed=9)
    phone = contexts.new(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    page = phone.new_page()

    page.goto("/login")
    _no_sideways_scroll(page)
    screenshots.save(page, "phone-login")
    sign_in_with_key(page, key)

    page.goto("/generate")
    expect(page.locator("#problems")).to_have_text("Ready to generate.")
    _no_sideways_scroll(page)
    # one column: the prompt panel comes below the pickers, not beside them
    pickers = page.locator(".pickers").bounding_box()
    panel = page.locator("aside.panel").bounding_box()
    assert pickers is not None
    assert panel is not None
    assert panel["y"] >= pickers["y"] + pickers["height"]
    expect(page.locator("#submit")).to_be_visible()
    screenshots.save(page, "phone-generate")

    page.goto("/gallery")
    expect(page.locator("ul.grid li.tile")).to_have_count(1)
    _no_sideways_scroll(page)
    screenshots.save(page, "phone-gallery")

    page.goto(f"/images/{image_id}")
    expect(page.locator("#detail figure img")).to_be_visible()
    _no_sideways_scroll(page)
    screenshots.save(page, "phone-image")
