"""A storyboard on one page: frames in a grid, in order, each with its caption underneath.

Reviewers judge a storyboard as a whole (does the light move from day to torch to sunrise, does
the character stay on model), which a folder of files makes hard. Pillow only and CPU-bound,
like the rest of this package: callers run it in a worker thread.
"""

from __future__ import annotations

import functools
import io
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (250, 247, 242)
PLACEHOLDER = (239, 233, 223)
INK = (29, 26, 22)
ELLIPSIS = "…"
# Pillow's own font, the last resort, has no accented letters: Portuguese titles need them
FONT_FILES = (
    "DejaVuSans.ttf",
    "LiberationSans-Regular.ttf",
    "NotoSans-Regular.ttf",
    "Arial.ttf",
    "arial.ttf",
    "Helvetica.ttc",
)
NO_SUCH_CHARACTER = "\U0010fffd"  # a private-use code point: every font draws its "missing" box

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
# Draws extra marks for one cell after its caption: (draw, cell index, (left, top, right, bottom)
# of the cell's image square and caption together). Scores, status colours, outlines.
CaptionHook = Callable[[ImageDraw.ImageDraw, int, tuple[int, int, int, int]], None]


@dataclass(frozen=True, slots=True)
class SheetCell:
    """One frame: its caption and its encoded image, or ``None`` for a frame not made yet."""

    caption: str
    image: bytes | None


@dataclass(frozen=True, slots=True)
class SheetLayout:
    columns: int = 4
    cell: int = 256
    gap: int = 16
    margin: int = 24
    font_size: int = 15
    caption_lines: int = 2


def fit_within(width: int, height: int, box: int, *, enlarge: bool = False) -> tuple[int, int]:
    """The size of `width` x `height` scaled to fit a `box` square, keeping its proportions.

    Never enlarged unless asked, matching the thumbnails the pipeline stores, so a page can give
    an image its exact width and height before it loads.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"a size must be positive, got {width}x{height}")
    scale = box / max(width, height)
    if scale >= 1 and not enlarge:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def compose_contact_sheet(
    cells: Sequence[SheetCell],
    layout: SheetLayout = SheetLayout(),
    caption_hook: CaptionHook | None = None,
) -> bytes:
    """A PNG of `cells` left to right, top to bottom; unreadable or missing images stay blank.

    A broken frame must not cost the reviewer the rest of the sheet, so it becomes an empty
    cell with its caption rather than an error.
    """
    if not cells:
        raise ValueError("a contact sheet needs at least one frame")
    if layout.columns < 1 or layout.cell < 16 or layout.caption_lines < 1:
        raise ValueError("columns, cell size and caption lines must be positive")
    font = _font(layout.font_size)
    line_height = _line_height(font)
    caption_height = layout.caption_lines * line_height + layout.gap // 2
    columns = min(layout.columns, len(cells))
    rows = math.ceil(len(cells) / columns)
    step_x = layout.cell + layout.gap
    step_y = layout.cell + caption_height + layout.gap
    width = 2 * layout.margin + columns * step_x - layout.gap
    height = 2 * layout.margin + rows * step_y - layout.gap
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for position, cell in enumerate(cells):
        left = layout.margin + (position % columns) * step_x
        top = layout.margin + (position // columns) * step_y
        _place(sheet, draw, cell.image, left, top, layout.cell)
        caption = drawable(cell.caption, font)
        lines = _wrap(draw, caption, font, layout.cell, layout.caption_lines)
        for number, line in enumerate(lines):
            y = top + layout.cell + layout.gap // 2 + number * line_height
            draw.text((left, y), line, fill=INK, font=font)
        if caption_hook is not None:
            caption_hook(draw, position, (left, top, left + layout.cell, top + step_y - layout.gap))
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _place(
    sheet: Image.Image, draw: ImageDraw.ImageDraw, data: bytes | None, left: int, top: int, box: int
) -> None:
    picture = _decode(data)
    if picture is None:
        draw.rectangle((left, top, left + box - 1, top + box - 1), fill=PLACEHOLDER)
        return
    size = fit_within(picture.width, picture.height, box, enlarge=True)
    if size != picture.size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    x = left + (box - size[0]) // 2
    y = top + (box - size[1]) // 2
    if picture.mode == "RGBA":
        sheet.paste(picture, (x, y), picture)
    else:
        sheet.paste(picture, (x, y))


def _decode(data: bytes | None) -> Image.Image | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            has_alpha = opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info
            return opened.convert("RGBA" if has_alpha else "RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


@functools.cache
def _font_path() -> str | None:
    """The first common sans font with accented letters found among the system fonts."""
    for name in FONT_FILES:
        try:
            return str(ImageFont.truetype(name, 12).path)
        except OSError:
            continue
    return None


def _font(size: int) -> Font:
    # a fresh font per sheet: sheets are drawn in worker threads, and a FreeType face is not
    # meant to be shared between threads drawing at once
    path = _font_path()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def _glyph(font: Font, char: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(char)
    return mask.size, bytes(mask)


def drawable(text: str, font: Font) -> str:
    """`text` with each letter the font has no glyph for written without its accent.

    "distrações" reads better as "distracoes" than with two empty boxes in it.
    """
    missing = _glyph(font, NO_SUCH_CHARACTER)
    out: list[str] = []
    for char in text:
        if char.isascii() or _glyph(font, char) != missing:
            out.append(char)
            continue
        plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
        out.append(plain or "?")
    return "".join(out)


def _line_height(font: Font) -> int:
    box = font.getbbox("ÁgjÇ")
    return int(box[3] - box[1]) + 6


def _wrap(
    draw: ImageDraw.ImageDraw, text: str, font: Font, width: int, max_lines: int
) -> list[str]:
    """Words on as many lines as allowed; what does not fit ends in an ellipsis."""
    ellipsis = drawable(ELLIPSIS, font)  # "..." with a font that has no "…"
    lines: list[str] = []
    words = text.split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        lines.append(line)
    if words:
        lines[-1] += ellipsis
    return [_shorten(draw, line, font, width, ellipsis) for line in lines]


def _shorten(draw: ImageDraw.ImageDraw, line: str, font: Font, width: int, ellipsis: str) -> str:
    if draw.textlength(line, font=font) <= width:
        return line
    body = line.removesuffix(ellipsis)
    while body and draw.textlength(body + ellipsis, font=font) > width:
        body = body[:-1]
    return body.rstrip() + ellipsis
