"""The contact sheet: frames in order on a grid, captions underneath, broken frames left blank."""

from __future__ import annotations

import io
import unicodedata

import pytest
from PIL import Image, ImageFont

from caverna.imaging.contact_sheet import (
    BACKGROUND,
    PLACEHOLDER,
    SheetCell,
    SheetLayout,
    compose_contact_sheet,
    drawable,
    fit_within,
)

LAYOUT = SheetLayout(columns=4, cell=64, gap=8, margin=10, font_size=11, caption_lines=2)
COLOURS = [
    (200, 30, 30),
    (30, 160, 30),
    (30, 30, 200),
    (200, 200, 30),
    (30, 200, 200),
    (200, 30, 200),
    (120, 60, 10),
    (10, 60, 120),
]


def encoded(
    colour: tuple[int, int, int], size: tuple[int, int] = (48, 64), fmt: str = "PNG"
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return out.getvalue()


def plain(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def opened(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture.convert("RGB")


def cell_centre(sheet: Image.Image, position: int, rows: int, columns: int = 4) -> tuple[int, int]:
    """The middle of cell `position`'s image square, found from the sheet's own size."""
    step_y = (sheet.height - 2 * LAYOUT.margin + LAYOUT.gap) // rows
    step_x = LAYOUT.cell + LAYOUT.gap
    x = LAYOUT.margin + (position % columns) * step_x + LAYOUT.cell // 2
    y = LAYOUT.margin + (position // columns) * step_y + LAYOUT.cell // 2
    return x, y


def colours(picture: Image.Image) -> set[tuple[int, ...]]:
    found = picture.getcolors(picture.width * picture.height) or []
    return {colour for _, colour in found if isinstance(colour, tuple)}


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("size", "box", "enlarge", "expected"),
    [
        ((1024, 1536), 256, False, (171, 256)),
        ((1536, 1024), 256, False, (256, 171)),
        ((100, 50), 256, False, (100, 50)),
        ((9, 16), 256, True, (144, 256)),
        ((256, 256), 256, False, (256, 256)),
        ((5000, 1), 256, False, (256, 1)),
    ],
)
def test_fit_within_keeps_proportions(
    size: tuple[int, int], box: int, enlarge: bool, expected: tuple[int, int]
) -> None:
    assert fit_within(*size, box, enlarge=enlarge) == expected


def test_fit_within_refuses_an_empty_size() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        fit_within(0, 10, 256)


def test_frames_are_laid_out_in_order_on_the_grid() -> None:
    cells = [SheetCell(f"{n}. Frame {n}", encoded(colour)) for n, colour in enumerate(COLOURS, 1)]
    sheet = opened(compose_contact_sheet(cells, LAYOUT))
    assert sheet.width == 2 * LAYOUT.margin + 4 * LAYOUT.cell + 3 * LAYOUT.gap
    assert sheet.height > 2 * LAYOUT.cell + 2 * LAYOUT.margin  # two rows, with room for captions
    for position, colour in enumerate(COLOURS):
        pixel = sheet.getpixel(cell_centre(sheet, position, rows=2))
        assert isinstance(pixel, tuple)
        assert close(pixel, colour), (position, pixel, colour)
    assert sheet.getpixel((1, 1)) == BACKGROUND


def test_captions_are_drawn_under_each_frame() -> None:
    cells = [SheetCell("1. The invitation", encoded(COLOURS[0]))]
    with_caption = opened(compose_contact_sheet(cells, LAYOUT))
    without = opened(compose_contact_sheet([SheetCell("", encoded(COLOURS[0]))], LAYOUT))
    below = (
        LAYOUT.margin,
        LAYOUT.margin + LAYOUT.cell,
        LAYOUT.margin + LAYOUT.cell,
        with_caption.height - LAYOUT.margin,
    )
    assert any(sum(c) < 300 for c in colours(with_caption.crop(below))), "no caption drawn"
    assert not any(sum(c) < 300 for c in colours(without.crop(below)))


def test_missing_and_broken_images_become_blank_cells() -> None:
    cells = [
        SheetCell("1. Done", encoded(COLOURS[0])),
        SheetCell("2. Not made yet", None),
        SheetCell("3. Broken", b"definitely not an image"),
        SheetCell("4. WebP", encoded(COLOURS[3], fmt="WEBP")),
    ]
    sheet = opened(compose_contact_sheet(cells, LAYOUT))
    assert close(sheet.getpixel(cell_centre(sheet, 0, rows=1)), COLOURS[0])  # type: ignore[arg-type]
    assert sheet.getpixel(cell_centre(sheet, 1, rows=1)) == PLACEHOLDER
    assert sheet.getpixel(cell_centre(sheet, 2, rows=1)) == PLACEHOLDER
    assert close(sheet.getpixel(cell_centre(sheet, 3, rows=1)), COLOURS[3])  # type: ignore[arg-type]


def test_a_short_run_makes_a_narrower_sheet() -> None:
    two = opened(compose_contact_sheet([SheetCell("a", None), SheetCell("b", None)], LAYOUT))
    assert two.width == 2 * LAYOUT.margin + 2 * LAYOUT.cell + LAYOUT.gap


def test_transparent_frames_sit_on_the_sheet_background() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(out, format="PNG")
    sheet = opened(compose_contact_sheet([SheetCell("clear", out.getvalue())], LAYOUT))
    assert sheet.getpixel(cell_centre(sheet, 0, rows=1)) == BACKGROUND


def test_the_same_frames_make_the_same_bytes() -> None:
    cells = [SheetCell("1. Acendendo a tocha", encoded(COLOURS[1])), SheetCell("2. x", None)]
    assert compose_contact_sheet(cells, LAYOUT) == compose_contact_sheet(cells, LAYOUT)


def test_long_captions_are_cut_to_the_cell_width() -> None:
    long = "3. " + " ".join(["distrações"] * 30)
    sheet = opened(compose_contact_sheet([SheetCell(long, encoded(COLOURS[2]))], LAYOUT))
    beside = (
        LAYOUT.margin + LAYOUT.cell + 2,
        LAYOUT.margin + LAYOUT.cell,
        sheet.width,
        sheet.height,
    )
    # one column wide: nothing may be drawn to the right of the cell
    assert colours(sheet.crop(beside)) <= {BACKGROUND}


def test_letters_a_font_cannot_draw_lose_their_accent() -> None:
    bare = ImageFont.load_default(size=12)  # Pillow's own font, short of accented letters
    missing = bytes(bare.getmask("\U0010fffd"))
    text = drawable("Guardando as distrações…", bare)
    assert all(char.isascii() or bytes(bare.getmask(char)) != missing for char in text)
    assert plain(text) == plain("Guardando as distrações…") == "Guardando as distracoes..."
    assert drawable("plain ascii", bare) == "plain ascii"


def test_an_empty_sheet_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        compose_contact_sheet([], LAYOUT)
    with pytest.raises(ValueError, match="must be positive"):
        compose_contact_sheet([SheetCell("x", None)], SheetLayout(columns=0))
