"""Accessibility measurements run inside the page: WCAG contrast, and what keyboard focus shows.

The contrast check reads what the browser rendered (computed colours, font sizes, opacity), not
the stylesheet, so a rule overridden elsewhere or a colour inherited from an unexpected parent is
measured as the reader sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from playwright.sync_api import Page

# WCAG 2.x: 4.5:1 for text, 3:1 for large text (24 px, or 18.66 px bold and heavier)
CONTRAST_JS = r"""
() => {
  const SKIP = new Set(["SCRIPT", "STYLE", "TITLE", "TEMPLATE", "NOSCRIPT", "OPTION", "OPTGROUP",
                        "PROGRESS", "DESC", "title", "desc", "DATALIST"]);
  const FIELDS = new Set(["INPUT", "SELECT", "TEXTAREA"]);
  const NO_TEXT_INPUTS = new Set(
    ["hidden", "checkbox", "radio", "range", "color", "image", "file"]);

  function parse(color) {
    const m = color.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const parts = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return { r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1 };
  }
  function over(top, bottom) {  // top composited over an opaque bottom
    const a = top.a;
    return { r: top.r * a + bottom.r * (1 - a), g: top.g * a + bottom.g * (1 - a),
             b: top.b * a + bottom.b * (1 - a), a: 1 };
  }
  function luminance(c) {
    const ch = [c.r, c.g, c.b].map((v) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
  }
  function ratio(a, b) {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  }
  function background(el) {
    // every background from the root down to the element, composited in paint order
    const chain = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) chain.push(node);
    let color = { r: 255, g: 255, b: 255, a: 1 };  // the canvas
    let image = false;
    for (const node of chain.reverse()) {
      const style = getComputedStyle(node);
      if (style.backgroundImage && style.backgroundImage !== "none") image = true;
      const bg = parse(style.backgroundColor);
      if (bg && bg.a > 0) color = over(bg, color);
    }
    return { color, image };
  }
  function opacity(el) {
    let value = 1;
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      value *= Number(getComputedStyle(node).opacity);
    }
    return value;
  }
  function hidden(el) {
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.display === "none" || style.visibility !== "visible") return true;
      if (style.clip && style.clip !== "auto") return true;  // visually hidden, for readers
      if (style.clipPath && style.clipPath !== "none") return true;
    }
    const rect = el.getBoundingClientRect();
    if (rect.width <= 1 || rect.height <= 1) return true;
    if (rect.right <= 0 || rect.bottom <= 0) return true;  // parked off screen (skip link)
    return false;
  }
  function inactive(el) {
    // WCAG exempts inactive controls: disabled ones, and what labels them
    if (el.matches(".reason")) return false;  // why an option is ruled out: read it
    const control = el.closest("button, input, select, textarea, fieldset, label");
    if (!control) return false;
    if (control.matches(":disabled")) return true;
    const input = control.tagName === "LABEL"
      ? control.querySelector("input, select, textarea") : null;
    return Boolean(input && input.disabled);
  }
  function describe(el) {
    let name = el.tagName.toLowerCase();
    if (el.id) name += "#" + el.id;
    else if (el.classList.length) name += "." + [...el.classList].join(".");
    const parent = el.parentElement;
    if (parent && parent.id) name = `#${parent.id} > ${name}`;
    return name;
  }
  function measure(el, text, colorText, pseudo) {
    const style = getComputedStyle(el, pseudo);
    const size = parseFloat(style.fontSize);
    const weight = Number(style.fontWeight) || 400;
    const large = size >= 24 || (size >= 18.66 && weight >= 700);
    const fg = parse(colorText || style.color);
    if (!fg) return null;
    const bg = background(el);
    fg.a *= opacity(el);
    const shown = over(fg, bg.color);
    const value = ratio(shown, bg.color);
    const rgb = (c) => `rgb(${Math.round(c.r)}, ${Math.round(c.g)}, ${Math.round(c.b)})`;
    return { element: describe(el), text: text.trim().slice(0, 60),
             ratio: Math.round(value * 100) / 100, required: large ? 3 : 4.5, size, weight,
             over_image: bg.image, fg: rgb(shown), bg: rgb(bg.color) };
  }

  const results = [];
  for (const el of document.querySelectorAll("body *")) {
    if (SKIP.has(el.tagName) || hidden(el) || inactive(el)) continue;
    if (FIELDS.has(el.tagName)) {
      if (el.tagName === "INPUT" && NO_TEXT_INPUTS.has(el.type)) continue;
      const value = el.tagName === "SELECT" ? (el.selectedOptions[0] || {}).text || "" : el.value;
      if (value && value.trim()) results.push(measure(el, value, null, null));
      if (!value && el.placeholder) {
        const hint = getComputedStyle(el, "::placeholder").color;
        results.push(measure(el, el.placeholder, hint, "::placeholder"));
      }
      continue;
    }
    const own = [...el.childNodes]
      .filter((n) => n.nodeType === 3).map((n) => n.textContent).join("");
    if (!own.trim()) continue;
    if (el instanceof SVGElement) {
      const fill = getComputedStyle(el).fill;
      results.push(measure(el, own, fill, null));
      continue;
    }
    results.push(measure(el, own, null, null));
  }
  return results.filter(Boolean);
}
"""


@dataclass(frozen=True)
class Contrast:
    element: str
    text: str
    ratio: float
    required: float
    fg: str
    bg: str
    size: float
    weight: int
    over_image: bool

    def __str__(self) -> str:
        return (
            f"{self.element} {self.text!r}: {self.ratio}:1 < {self.required}:1 "
            f"({self.fg} on {self.bg}, {self.size}px/{self.weight})"
        )


def contrasts(page: Page) -> list[Contrast]:
    """Every visible text of the page with its contrast against its effective background."""
    found: list[dict[str, Any]] = page.evaluate(CONTRAST_JS)
    return [
        Contrast(
            element=str(item["element"]),
            text=str(item["text"]),
            ratio=float(item["ratio"]),
            required=float(item["required"]),
            fg=str(item["fg"]),
            bg=str(item["bg"]),
            size=float(item["size"]),
            weight=int(item["weight"]),
            over_image=bool(item["over_image"]),
        )
        for item in found
    ]


# -- keyboard focus ------------------------------------------------------------------------------

# the interactive controls a keyboard user must be able to reach on a page
INTERACTIVE_JS = r"""
() => {
  const selector = "a[href], button, input, select, textarea, summary, [tabindex]";
  function shown(el) {
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.display === "none" || style.visibility !== "visible") return false;
      if (node.hasAttribute("inert")) return false;
    }
    const rect = el.getBoundingClientRect();
    return rect.width > 0 && rect.height > 0;
  }
  const found = [];
  let index = 0;
  for (const el of document.querySelectorAll(selector)) {
    el.dataset.a11yIndex = String(index++);
    if (el.matches(":disabled") || (el.type === "hidden")) continue;
    if (el.getAttribute("tabindex") !== null && Number(el.getAttribute("tabindex")) < 0) continue;
    if (el.closest("details:not([open])") && el.tagName !== "SUMMARY") continue;
    if (el.closest("dialog:not([open])")) continue;
    const skipLink = el.classList.contains("skip");  // off screen until focused
    if (!skipLink && !shown(el)) continue;
    found.push({ index: Number(el.dataset.a11yIndex), tag: el.tagName.toLowerCase(),
                 id: el.id || "", text: (el.textContent || el.value || "").trim().slice(0, 40) });
  }
  return found;
}
"""

# what the focused element looks like, and where it is in the page
FOCUSED_JS = r"""
() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  const style = getComputedStyle(el);
  const rect = el.getBoundingClientRect();
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
  const shadow = style.boxShadow && style.boxShadow !== "none";
  return { index: el.dataset.a11yIndex === undefined ? -1 : Number(el.dataset.a11yIndex),
           tag: el.tagName.toLowerCase(), id: el.id || "", cls: String(el.className || ""),
           text: (el.textContent || el.value || "").trim().slice(0, 40),
           indicator: Boolean(outline || shadow),
           outline: `${style.outlineStyle} ${style.outlineWidth} ${style.outlineColor}`,
           focusVisible: el.matches(":focus-visible"),
           onScreen: rect.width > 0 && rect.height > 0 && rect.right > 0 && rect.bottom > 0 &&
                     rect.left < window.innerWidth };
}
"""
