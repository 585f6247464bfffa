"""Image intake and delivery: formats by bytes, bomb checks, passthrough without re-encoding."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import xml.etree.ElementTree as ET
import zlib
from typing import Any

import pytest
from PIL import Image, ImageDraw

from caverna.imaging import (
    Analyser,
    DeliveryFormat,
    ImageMetadata,
    ImageRejected,
    make_derivatives,
    process_image,
    read_metadata,
    sniff_format,
)
from caverna.imaging.containers import png_chunks, riff_chunks

META = ImageMetadata(
    image_id="img_01J9Z",
    prompt="a calm mentor, warm cave light",
    negative_prompt="text, watermark",
    params={"pose": "welcoming-turn", "props": ["torch"], "seed": 3},
    seed=3,
    provider="preview",
    model="caverna-preview-1",
    template_version="e1-6b5b5eb71b2058b8",
    pack_version="1.0.0",
)
TRICKY = ImageMetadata(
    image_id='id<&>"quoted"',
    prompt="Capitão <b>Caverna</b> & \"friends\" 'n' ember — 火 🔥\nsecond line\r\nthird",
    negative_prompt="</caverna:negativePrompt><evil/> & ]]>",
    params={"note": "<x a='1'>&amp;</x>", "ünïcode": ["ção", 1.5, None, True]},
    seed=4294967295,
    provider="prov & co",
    model="m<1>",
    template_version="t'1'",
    pack_version='"2"',
)


def picture(mode: str = "RGB", size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Shapes and a gradient: enough structure that a re-encode would change pixels."""
    image = Image.linear_gradient("L").resize(size).convert(mode)
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, size[0] // 2, size[1] - 8), fill=(200, 60, 20, 255)[: len(mode)])
    draw.rectangle((size[0] // 2, 4, size[0] - 6, 20), fill=(20, 90, 200, 255)[: len(mode)])
    if mode == "RGBA":
        draw.rectangle((0, size[1] - 10, 30, size[1]), fill=(0, 0, 0, 0))
    return image


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.mode, image.size, image.tobytes()


def chunk_bytes(data: bytes, kind: bytes) -> bytes:
    """The full bytes (header included) of the first RIFF chunk of `kind`."""
    chunk = next(c for c in riff_chunks(data) if c.kind == kind)
    return data[chunk.start : chunk.end]


def assert_same_fields(found: dict[str, Any], meta: ImageMetadata) -> None:
    assert found["image_id"] == meta.image_id
    assert found["prompt"] == meta.prompt
    assert found["negative_prompt"] == meta.negative_prompt
    assert found["params"] == meta.params
    assert found["seed"] == meta.seed
    assert found["provider"] == meta.provider
    assert found["model"] == meta.model
    assert found["template_version"] == meta.template_version
    assert found["pack_version"] == meta.pack_version


# --- passthrough: the pixels are never re-encoded ------------------------------------------


def test_png_passthrough_adds_text_chunks_and_keeps_every_original_chunk() -> None:
    raw = encoded(picture(), "PNG")
    result = process_image(raw, delivery="png", metadata=META)

    assert result.reencoded is False
    assert sniff_format(result.data) == "png"
    assert (result.content_type, result.extension) == ("image/png", "png")
    # The new chunks go in just before the image data; every original chunk is byte-identical.
    idat = next(c for c in png_chunks(raw) if c.kind == b"IDAT")
    head, tail = raw[: idat.start], raw[idat.start :]
    assert result.data.startswith(head)
    assert result.data.endswith(tail)
    kinds = [c.kind for c in png_chunks(raw)]
    at = kinds.index(b"IDAT")
    assert [c.kind for c in png_chunks(result.data)] == [*kinds[:at], b"tEXt", b"iTXt", *kinds[at:]]
    assert pixels(result.data) == pixels(raw)
    assert_same_fields(read_metadata(result.data), META)

    with Image.open(io.BytesIO(result.data)) as image:  # an independent reader sees both
        parameters = image.info["parameters"]
        assert "caverna.dev/ns/1.0" in image.info["XML:com.adobe.xmp"]
    lines = parameters.splitlines()
    assert lines[:2] == [META.prompt, f"Negative prompt: {META.negative_prompt}"]
    assert len(lines) == 3
    assert lines[2].startswith("Seed: 3, Size: 96x64, Model: caverna-preview-1, Provider: preview")
    assert 'Caverna params: "{\\"pose\\":' in lines[2]


def test_lossy_vp8_webp_is_promoted_to_vp8x_without_touching_the_frame() -> None:
    raw = encoded(picture(size=(101, 67)), "WEBP", quality=80)
    assert [c.kind for c in riff_chunks(raw)] == [b"VP8 "]

    result = process_image(raw, delivery="webp", metadata=META)

    assert result.reencoded is False
    out = result.data
    assert [c.kind for c in riff_chunks(out)] == [b"VP8X", b"VP8 ", b"XMP "]
    assert chunk_bytes(raw, b"VP8 ") in out
    assert int.from_bytes(out[4:8], "little") == len(out) - 8
    flags = out[20]
    assert flags & 0x04  # XMP
    assert not flags & 0x10  # no alpha in a lossy simple file
    width = int.from_bytes(out[24:27], "little") + 1
    height = int.from_bytes(out[27:30], "little") + 1
    assert (width, height) == (101, 67) == (result.width, result.height)
    assert pixels(out) == pixels(raw)
    assert_same_fields(read_metadata(out), META)
    with Image.open(io.BytesIO(out)) as image:
        assert b"caverna:imageId" in image.info["xmp"]


def test_lossless_vp8l_webp_with_alpha_keeps_alpha_and_pixels() -> None:
    raw = encoded(picture("RGBA"), "WEBP", lossless=True)
    assert [c.kind for c in riff_chunks(raw)] == [b"VP8L"]

    result = process_image(raw, delivery="webp", metadata=META)

    assert result.reencoded is False
    assert [c.kind for c in riff_chunks(result.data)] == [b"VP8X", b"VP8L", b"XMP "]
    assert chunk_bytes(raw, b"VP8L") in result.data
    assert result.data[20] & 0x10  # alpha flag carried over from the VP8L header
    mode, size, data = pixels(result.data)
    assert (mode, size) == ("RGBA", (96, 64))
    assert (mode, size, data) == pixels(raw)
    assert_same_fields(read_metadata(result.data), META)


def test_extended_webp_keeps_its_chunks_and_replaces_an_older_xmp() -> None:
    exif = Image.Exif()
    exif[0x010E] = "provider description"  # ImageDescription
    raw = encoded(picture(), "WEBP", quality=80, exif=exif.tobytes(), xmp=b"<old/>")
    assert [c.kind for c in riff_chunks(raw)] == [b"VP8X", b"VP8 ", b"EXIF", b"XMP "]

    result = process_image(raw, delivery="webp", metadata=META)

    out = result.data
    assert result.reencoded is False
    assert [c.kind for c in riff_chunks(out)] == [b"VP8X", b"VP8 ", b"EXIF", b"XMP "]
    assert chunk_bytes(raw, b"VP8 ") in out
    assert chunk_bytes(raw, b"EXIF") in out
    assert out[20] & 0x0C == 0x0C  # EXIF and XMP flags
    assert out[24:30] == raw[24:30]  # canvas size unchanged
    assert int.from_bytes(out[4:8], "little") == len(out) - 8
    assert b"<old/>" not in out
    assert pixels(out) == pixels(raw)
    assert_same_fields(read_metadata(out), META)


def test_processing_twice_replaces_metadata_instead_of_stacking_it() -> None:
    cases: tuple[tuple[DeliveryFormat, str], ...] = (("png", "PNG"), ("webp", "WEBP"))
    for delivery, fmt in cases:
        first = process_image(encoded(picture(), fmt), delivery=delivery, metadata=META)
        second = process_image(first.data, delivery=delivery, metadata=TRICKY)
        assert second.data.count(b"caverna:imageId>") == 2  # one opening, one closing tag
        assert_same_fields(read_metadata(second.data), TRICKY)


# --- re-encodes -----------------------------------------------------------------------------


def test_jpeg_to_webp_is_a_reencode_with_xmp() -> None:
    raw = encoded(picture(size=(120, 80)), "JPEG", quality=90)
    result = process_image(raw, delivery="webp", metadata=META)

    assert result.reencoded is True
    assert sniff_format(result.data) == "webp"
    assert (result.content_type, result.extension) == ("image/webp", "webp")
    assert (result.width, result.height) == (120, 80)
    assert pixels(result.data)[1] == (120, 80)
    assert_same_fields(read_metadata(result.data), META)


def test_png_to_avif_is_a_reencode_with_xmp() -> None:
    raw = encoded(picture("RGBA"), "PNG")
    result = process_image(raw, delivery="avif", metadata=META)

    assert result.reencoded is True
    assert sniff_format(result.data) == "avif"
    assert (result.content_type, result.extension) == ("image/avif", "avif")
    mode, size, _ = pixels(result.data)
    assert (mode, size) == ("RGBA", (96, 64))
    assert_same_fields(read_metadata(result.data), META)


def test_webp_to_png_carries_both_text_forms() -> None:
    result = process_image(encoded(picture(), "WEBP"), delivery="png", metadata=META)
    assert result.reencoded is True
    found = read_metadata(result.data)
    assert_same_fields(found, META)
    assert found["parameters"].startswith(META.prompt + "\nNegative prompt: text, watermark\n")


@pytest.mark.parametrize("delivery", ["png", "webp", "avif"])
def test_output_is_deterministic(delivery: DeliveryFormat) -> None:
    for raw in (encoded(picture(), "PNG"), encoded(picture(), "JPEG")):
        first = process_image(raw, delivery=delivery, metadata=TRICKY)
        second = process_image(raw, delivery=delivery, metadata=TRICKY)
        assert first == second
        assert first.sha256 == hashlib.sha256(first.data).hexdigest()


# --- metadata text --------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "delivery"), [("PNG", "png"), ("WEBP", "webp"), ("PNG", "avif")])
def test_unicode_and_xml_special_characters_round_trip(fmt: str, delivery: DeliveryFormat) -> None:
    result = process_image(encoded(picture(), fmt), delivery=delivery, metadata=TRICKY)
    assert_same_fields(read_metadata(result.data), TRICKY)


def test_xmp_packet_is_well_formed_for_standard_readers() -> None:
    result = process_image(encoded(picture(), "WEBP"), delivery="webp", metadata=TRICKY)
    chunk = next(c for c in riff_chunks(result.data) if c.kind == b"XMP ")
    root = ET.fromstring(result.data[chunk.body_start : chunk.body_end])
    rdf = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
    description = root.find(f"{rdf}RDF/{rdf}Description")
    assert description is not None
    alt_item = description.find(f"{{http://purl.org/dc/elements/1.1/}}description/{rdf}Alt/{rdf}li")
    assert alt_item is not None
    assert alt_item.text == TRICKY.prompt
    assert description.findtext("{https://caverna.dev/ns/1.0/}model") == "m<1>"


def test_missing_optional_fields_come_back_as_none() -> None:
    meta = ImageMetadata("id", "p", None, {}, None, "preview", "m", "t", "v")
    result = process_image(encoded(picture(), "PNG"), delivery="png", metadata=meta)
    found = read_metadata(result.data)
    assert_same_fields(found, meta)
    assert "Negative prompt" not in found["parameters"]
    assert "Seed" not in found["parameters"]


def test_an_image_without_metadata_reads_as_empty() -> None:
    assert read_metadata(encoded(picture(), "WEBP")) == {}
    assert read_metadata(encoded(picture(), "PNG")) == {}


# --- thumbnails -----------------------------------------------------------------------------


def test_thumbnail_fits_the_longest_side_and_keeps_alpha() -> None:
    raw = encoded(picture("RGBA", (1000, 500)), "PNG")
    result = process_image(raw, delivery="webp", metadata=META)
    assert result.thumbnail is not None
    assert result.thumbnail_content_type == "image/webp"
    assert sniff_format(result.thumbnail) == "webp"
    mode, size, _ = pixels(result.thumbnail)
    assert (mode, size) == ("RGBA", (256, 128))

    portrait = process_image(
        encoded(picture("RGB", (300, 900)), "PNG"), delivery="png", metadata=META, thumbnail_size=90
    )
    assert portrait.thumbnail is not None
    assert pixels(portrait.thumbnail)[:2] == ("RGB", (30, 90))


def test_thumbnail_never_upscales() -> None:
    result = process_image(encoded(picture(size=(100, 50)), "PNG"), delivery="png", metadata=META)
    assert result.thumbnail is not None
    assert pixels(result.thumbnail)[1] == (100, 50)


# --- rejections -----------------------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A structurally valid PNG whose header claims a size its tiny data could never fill."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def webp_claiming(width: int, height: int) -> bytes:
    header = bytes((0, 0, 0, 0)) + (width - 1).to_bytes(3, "little")
    header += (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + header
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_claiming(width: int, height: int) -> bytes:
    real = encoded(picture(), "JPEG")
    sof = real.index(b"\xff\xc0")
    return real[: sof + 5] + struct.pack(">HH", height, width) + real[sof + 9 :]


@pytest.mark.parametrize("bomb", [png_claiming, webp_claiming, jpeg_claiming])
def test_decompression_bombs_are_refused_from_the_header_alone(
    bomb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the decoder must not be reached")

    monkeypatch.setattr(Image, "open", no_decoding)
    with pytest.raises(ImageRejected) as caught:
        process_image(bomb(60000, 60000), delivery="webp", metadata=META)
    assert caught.value.code == "image_too_large"


def test_png_claiming_100000_square_is_too_large() -> None:
    with pytest.raises(ImageRejected) as caught:
        process_image(png_claiming(100_000, 100_000), delivery="png", metadata=META)
    assert caught.value.code == "image_too_large"
    assert "100000x100000" in caught.value.message


def test_limits_are_the_callers_to_set() -> None:
    raw = encoded(picture(size=(100, 100)), "PNG")
    with pytest.raises(ImageRejected) as pixels_caught:
        process_image(raw, delivery="png", metadata=META, max_pixels=9_999)
    assert pixels_caught.value.code == "image_too_large"
    with pytest.raises(ImageRejected) as bytes_caught:
        process_image(raw, delivery="png", metadata=META, max_bytes=len(raw) - 1)
    assert bytes_caught.value.code == "image_too_large"
    assert process_image(raw, delivery="png", metadata=META, max_pixels=10_000).width == 100


@pytest.mark.parametrize(("fmt", "delivery"), [("PNG", "png"), ("WEBP", "webp"), ("JPEG", "webp")])
def test_truncated_images_are_corrupt(fmt: str, delivery: DeliveryFormat) -> None:
    raw = encoded(picture(size=(200, 150)), fmt)
    for cut in (len(raw) // 2, len(raw) - 3, 40):
        with pytest.raises(ImageRejected) as caught:
            process_image(raw[:cut], delivery=delivery, metadata=META)
        assert caught.value.code == "corrupt_image", cut


def test_pixel_data_damaged_inside_a_well_formed_png_is_corrupt() -> None:
    raw = bytearray(png_claiming(64, 64))  # the IDAT holds far fewer bytes than 64x64 needs
    with pytest.raises(ImageRejected) as caught:
        process_image(bytes(raw), delivery="png", metadata=META)
    assert caught.value.code == "corrupt_image"


@pytest.mark.parametrize(
    "data",
    [
        encoded(picture(), "GIF"),
        encoded(picture(), "BMP"),
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        bytes(range(256)) * 4,
        b"",
    ],
    ids=["gif", "bmp", "svg", "random", "empty"],
)
def test_other_formats_are_unsupported(data: bytes) -> None:
    with pytest.raises(ImageRejected) as caught:
        process_image(data, delivery="webp", metadata=META)
    assert caught.value.code == "unsupported_image_format"


def test_avif_input_and_animations_are_unsupported() -> None:
    avif = encoded(picture(), "AVIF")
    assert sniff_format(avif) == "avif"
    frames = [picture(), picture().rotate(90)]
    animated = encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    for data in (avif, animated):
        with pytest.raises(ImageRejected) as caught:
            process_image(data, delivery="webp", metadata=META)
        assert caught.value.code == "unsupported_image_format"


def test_rejections_survive_a_process_boundary() -> None:
    error = pickle.loads(pickle.dumps(ImageRejected("corrupt_image", "cut short")))
    assert (error.code, error.message) == ("corrupt_image", "cut short")


def test_format_comes_from_magic_bytes() -> None:
    assert sniff_format(encoded(picture(), "PNG")) == "png"
    assert sniff_format(encoded(picture(), "JPEG")) == "jpeg"
    assert sniff_format(encoded(picture(), "WEBP")) == "webp"
    assert sniff_format(encoded(picture(), "AVIF")) == "avif"
    with pytest.raises(ImageRejected) as caught:
        sniff_format(encoded(picture(), "GIF"))
    assert caught.value.code == "unsupported_image_format"
    assert "GIF" in caught.value.message


# -- completion without a decode, and the derivatives pass --------------------------------------


def test_without_a_thumbnail_a_passthrough_image_is_never_decoded() -> None:
    raw = bytearray(encoded(picture(size=(320, 200)), "WEBP", quality=80))
    raw[40:] = b"\xff" * (len(raw) - 40)  # the container holds; the bitstream is garbage
    damaged = bytes(raw)

    delivered = process_image(damaged, delivery="webp", metadata=META, with_thumbnail=False)

    assert delivered.thumbnail is None
    assert (delivered.width, delivered.height) == (320, 200)
    assert not delivered.reencoded
    assert read_metadata(delivered.data)["image_id"] == META.image_id
    with pytest.raises(ImageRejected) as caught:  # the decode would have refused it
        process_image(damaged, delivery="webp", metadata=META)
    assert caught.value.code == "corrupt_image"
    with pytest.raises(ImageRejected) as later:  # and the derivatives pass does
        make_derivatives(delivered.data)
    assert later.value.code == "corrupt_image"


def test_a_conversion_still_decodes_and_leaves_the_thumbnail_out() -> None:
    delivered = process_image(
        encoded(picture(), "PNG"), delivery="webp", metadata=META, with_thumbnail=False
    )
    assert delivered.reencoded
    assert delivered.thumbnail is None
    assert pixels(delivered.data)[1] == (96, 64)


def red_mean(image: Image.Image) -> dict[str, Any]:
    red, _green, _blue = image.convert("RGB").resize((1, 1)).tobytes()
    return {"red": red}


def refuses(image: Image.Image) -> dict[str, Any]:
    raise RuntimeError("cannot judge this one")


@pytest.mark.parametrize("delivery", ["webp", "png", "avif"])
def test_derivatives_decode_the_stored_image_once_for_thumbnail_and_analysers(
    delivery: DeliveryFormat,
) -> None:
    stored = process_image(
        encoded(Image.new("RGB", (1024, 640), "#F00000"), "PNG"),
        delivery=delivery,
        metadata=META,
        with_thumbnail=False,
    ).data

    derived = make_derivatives(
        stored, analysers=(Analyser("palette", red_mean), Analyser("judge", refuses))
    )

    assert (derived.width, derived.height) == (1024, 640)
    assert derived.thumbnail_content_type == "image/webp"
    assert pixels(derived.thumbnail)[1] == (256, 160)
    assert derived.analyses["palette"]["red"] >= 0xE8
    assert derived.errors == {"judge": "RuntimeError: cannot judge this one"}
    assert pickle.loads(pickle.dumps(derived)) == derived  # crosses the process pool
