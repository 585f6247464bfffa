"""What an image says about its own making, in forms other software already reads.

XMP is the one metadata block that PNG, WebP, AVIF and JPEG all carry and that exiftool, Adobe
tools and asset managers read, so it holds everything. PNG additionally gets the AUTOMATIC1111
``parameters`` text, which most image-generation tools display directly. Both are rendered
deterministically (sorted JSON, no timestamps), so the same image always yields the same bytes.
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image

from caverna.imaging.containers import XMP_KEYWORD, jpeg_xmp, png_texts, webp_xmp
from caverna.imaging.formats import ImageRejected, sniff_format

CAVERNA_NS = "https://caverna.dev/ns/1.0/"
_RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DC_NS = "http://purl.org/dc/elements/1.1/"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
PARAMETERS_KEYWORD = "parameters"

# (XMP property, ImageMetadata field); the property names follow XMP's lowerCamelCase habit.
_TEXT_FIELDS = (
    ("imageId", "image_id"),
    ("provider", "provider"),
    ("model", "model"),
    ("templateVersion", "template_version"),
    ("packVersion", "pack_version"),
)

# Characters XML 1.0 cannot carry at all, even escaped; they are replaced rather than dropped so a
# reader can see something was there.
_XML_INVALID = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_ENTITIES = {'"': "&quot;", "'": "&apos;", "\r": "&#13;"}


@dataclass(frozen=True)
class ImageMetadata:
    """Everything needed to trace an image back to the request, pack and template that made it."""

    image_id: str
    prompt: str
    negative_prompt: str | None
    params: dict[str, Any]
    seed: int | None
    provider: str
    model: str
    template_version: str
    pack_version: str


def _xml_text(text: str) -> str:
    # A bare CR would be normalised to LF by every XML parser; the character reference survives.
    return escape(_XML_INVALID.sub("\ufffd", text), _XML_ENTITIES)


def params_json(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def xmp_packet(meta: ImageMetadata) -> bytes:
    """The XMP packet (UTF-8) describing `meta`: dc:description plus the Caverna namespace."""
    fields = [
        f"<caverna:{name}>{_xml_text(getattr(meta, attr))}</caverna:{name}>"
        for name, attr in _TEXT_FIELDS
    ]
    if meta.negative_prompt is not None:
        fields.append(
            f"<caverna:negativePrompt>{_xml_text(meta.negative_prompt)}</caverna:negativePrompt>"
        )
    fields.append(f"<caverna:params>{_xml_text(params_json(meta.params))}</caverna:params>")
    if meta.seed is not None:
        fields.append(f"<caverna:seed>{int(meta.seed)}</caverna:seed>")
    body = "\n    ".join(fields)
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        f' <rdf:RDF xmlns:rdf="{_RDF_NS}">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:dc="{_DC_NS}"\n'
        f'    xmlns:caverna="{CAVERNA_NS}">\n'
        '    <dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
        f"{_xml_text(meta.prompt)}</rdf:li></rdf:Alt></dc:description>\n"
        f"    {body}\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


def _infotext_value(text: str) -> str:
    # The quoting AUTOMATIC1111 uses, so its own parser reads values holding commas or colons.
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def infotext(meta: ImageMetadata, width: int, height: int) -> str:
    """The AUTOMATIC1111 layout: prompt, then "Negative prompt: ...", then one "Key: value" line."""
    pairs: list[tuple[str, str]] = []
    if meta.seed is not None:
        pairs.append(("Seed", str(meta.seed)))
    pairs += [
        ("Size", f"{width}x{height}"),
        ("Model", meta.model),
        ("Provider", meta.provider),
        ("Image ID", meta.image_id),
        ("Template version", meta.template_version),
        ("Pack version", meta.pack_version),
        ("Caverna params", params_json(meta.params)),
    ]
    lines = [meta.prompt]
    if meta.negative_prompt:
        lines.append(f"Negative prompt: {meta.negative_prompt}")
    lines.append(", ".join(f"{key}: {_infotext_value(value)}" for key, value in pairs))
    return "\n".join(lines)


def _tag(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def parse_xmp(packet: bytes) -> dict[str, Any]:
    """The Caverna fields of an XMP packet, or {} when the packet holds none.

    Properties are accepted both as elements and as attributes, since XMP editors may rewrite one
    form into the other.
    """
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:
        raise ImageRejected("corrupt_image", "XMP with a document type declaration is refused")
    try:
        root = ET.fromstring(packet)
    except ET.ParseError as exc:
        raise ImageRejected("corrupt_image", f"the XMP packet is not well-formed: {exc}") from exc
    found: dict[str, str] = {}
    prompt: str | None = None
    for description in root.iter(_tag(_RDF_NS, "Description")):
        for key, value in description.attrib.items():
            if key.startswith(f"{{{CAVERNA_NS}}}"):
                found.setdefault(key[len(CAVERNA_NS) + 2 :], value)
        for child in description:
            if child.tag.startswith(f"{{{CAVERNA_NS}}}"):
                found.setdefault(child.tag[len(CAVERNA_NS) + 2 :], child.text or "")
            elif child.tag == _tag(_DC_NS, "description") and prompt is None:
                prompt = _alt_text(child)
    if not found:
        return {}
    seed = found.get("seed")
    params = found.get("params")
    result: dict[str, Any] = {attr: found.get(name) for name, attr in _TEXT_FIELDS}
    result.update(
        prompt=prompt,
        negative_prompt=found.get("negativePrompt"),
        params=json.loads(params) if params else {},
        seed=int(seed) if seed not in (None, "") else None,
    )
    return result


def _alt_text(element: ET.Element) -> str:
    items = list(element.iter(_tag(_RDF_NS, "li")))
    for item in items:
        if item.get(_tag(_XML_NS, "lang")) == "x-default":
            return item.text or ""
    if items:
        return items[0].text or ""
    return element.text or ""


def read_metadata(data: bytes) -> dict[str, Any]:
    """What process_image embedded: the ImageMetadata fields ({} if the image carries none).

    For PNG the AUTOMATIC1111 text comes back too, under "parameters".
    """
    fmt = sniff_format(data)
    packet: bytes | None
    extra: dict[str, Any] = {}
    if fmt == "png":
        texts = png_texts(data)
        xmp_text = texts.get(XMP_KEYWORD)
        packet = xmp_text.encode("utf-8") if xmp_text is not None else None
        if PARAMETERS_KEYWORD in texts:
            extra[PARAMETERS_KEYWORD] = texts[PARAMETERS_KEYWORD]
    elif fmt == "webp":
        packet = webp_xmp(data)
    elif fmt == "jpeg":
        packet = jpeg_xmp(data)
    else:
        packet = _avif_xmp(data)
    result = parse_xmp(packet) if packet else {}
    return {**result, **extra} if result else extra


def _avif_xmp(data: bytes) -> bytes | None:
    """AVIF keeps XMP as an item in its ISOBMFF meta box; Pillow's reader resolves it for us."""
    try:
        with Image.open(io.BytesIO(data), formats=["AVIF"]) as image:
            xmp = image.info.get("xmp")
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected("corrupt_image", "the AVIF file cannot be read") from exc
    if isinstance(xmp, str):
        return xmp.encode("utf-8")
    return xmp if isinstance(xmp, bytes) else None
