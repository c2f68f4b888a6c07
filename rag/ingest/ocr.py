"""OCR of PDF pages: rendered with pypdfium2, read with rapidocr-onnxruntime (PP-OCRv4 detection
and recognition models shipped inside its wheel: nothing is downloaded at run time).

Both are imported on first use only, so reading PDFs with a text layer never loads them, and the
OCR engine is built once per process (`engine`), not per page. Recognised text boxes are put in
reading order (`boxes_to_text`): one or two columns, lines top to bottom, a blank line where the
vertical gap says a paragraph ends.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

RENDER_DPI = 200  # PDF points are 1/72 in; at 150 dpi the recogniser glued words together ("beforethewinter")
MIN_SCORE = 0.5  # rapidocr's own text_score default: boxes recognised with less are dropped


class OcrError(Exception):
    """OCR could not run (engine missing, page not renderable): the reason, for the user."""


@dataclass(frozen=True)
class Box:
    """One recognised text line segment: its bounding box in pixels and its text."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str

    @property
    def height(self) -> float:
        return self.y1 - self.y0


@functools.cache
def engine():
    """The RapidOCR engine, built once per process (loading its three ONNX models takes ~0.3 s)."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as e:
        raise OcrError(f"rapidocr-onnxruntime is not installed ({e})") from e
    return RapidOCR()


def recognise(image) -> list[Box]:
    """Text boxes of one page image (H x W x 3 uint8 array), those scored at least MIN_SCORE."""
    result, _ = engine()(image)
    boxes = []
    for points, text, score in result or []:
        text = str(text).strip()
        if text and float(score) >= MIN_SCORE:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            boxes.append(Box(min(xs), min(ys), max(xs), max(ys), text))
    return boxes


def _gutter(boxes: Sequence[Box], width: float) -> float | None:
    """The x of a two-column gutter: in the middle 40 % of the page, the x crossed by the fewest
    boxes, when at most 10 % of the boxes (or one) cross it and at least 3 lie on each side. None: one
    column."""
    if len(boxes) < 6 or width <= 0:
        return None
    best, best_x = None, None
    for step in range(30, 71):
        x = width * step / 100
        crossing = sum(1 for b in boxes if b.x0 < x < b.x1)
        if best is None or crossing < best:
            best, best_x = crossing, x
    left = sum(1 for b in boxes if b.x1 <= best_x)
    right = sum(1 for b in boxes if b.x0 >= best_x)
    if best > max(1, 0.1 * len(boxes)) or left < 3 or right < 3:
        return None
    return best_x


def _lines(boxes: Sequence[Box]) -> list[list[Box]]:
    """Boxes grouped into lines (vertical centres within half a box height), top to bottom,
    each line left to right."""
    lines: list[list[Box]] = []
    for b in sorted(boxes, key=lambda b: (b.y0 + b.y1) / 2):
        centre = (b.y0 + b.y1) / 2
        if lines:
            last = lines[-1]
            last_centre = sum((c.y0 + c.y1) / 2 for c in last) / len(last)
            if abs(centre - last_centre) <= 0.5 * max(b.height, last[0].height):
                last.append(b)
                continue
        lines.append([b])
    return [sorted(line, key=lambda b: b.x0) for line in lines]


def _text(lines: list[list[Box]]) -> str:
    """Lines joined by newlines; a gap above a line of more than its height starts a paragraph."""
    out: list[str] = []
    prev_bottom = None
    for line in lines:
        top, height = min(b.y0 for b in line), max(b.height for b in line)
        if prev_bottom is not None and out:
            out.append("\n\n" if top - prev_bottom > height else "\n")
        out.append(" ".join(b.text for b in line))
        prev_bottom = max(b.y1 for b in line)
    return "".join(out)


def boxes_to_text(boxes: Sequence[Box], width: float) -> str:
    """Page text in reading order. Two columns (see `_gutter`): boxes crossing the gutter (titles,
    wide figures) cut the page into bands; each band is read left column, then right column."""
    gutter = _gutter(boxes, width)
    if gutter is None:
        return _text(_lines(boxes))
    spanning = sorted((b for b in boxes if b.x0 < gutter < b.x1), key=lambda b: b.y0)
    parts: list[str] = []
    top = float("-inf")
    for cut in [*spanning, None]:
        bottom = cut.y0 if cut is not None else float("inf")
        band = [b for b in boxes if not (b.x0 < gutter < b.x1) and top <= (b.y0 + b.y1) / 2 < bottom]
        for side in ([b for b in band if b.x1 <= gutter], [b for b in band if b.x1 > gutter]):
            if side:
                parts.append(_text(_lines(side)))
        if cut is not None:
            parts.append(cut.text)
            top = (cut.y0 + cut.y1) / 2
    return "\n\n".join(parts)


def render_pages(data: bytes, indexes: Sequence[int], dpi: int = RENDER_DPI):
    """Yield (index, H x W x 3 uint8 array) for the 0-based pages `indexes` of a PDF."""
    try:
        import pypdfium2 as pdfium
    except ImportError as e:
        raise OcrError(f"pypdfium2 is not installed ({e})") from e
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        raise OcrError(f"pdfium cannot open the file: {e}") from e
    try:
        for i in indexes:
            page = pdf[i]
            try:
                bitmap = page.render(scale=dpi / 72)
                yield i, bitmap.to_numpy()[:, :, :3].copy()
            finally:
                page.close()
    except pdfium.PdfiumError as e:
        raise OcrError(f"pdfium cannot render page {i + 1}: {e}") from e
    finally:
        pdf.close()


def ocr_pdf_pages(data: bytes, indexes: Sequence[int], dpi: int = RENDER_DPI) -> dict[int, str]:
    """Raw OCR text of the 0-based pages `indexes` of a PDF, page index -> text ("" when the page
    holds no recognisable text). Raises OcrError when OCR cannot run at all."""
    out: dict[int, str] = {}
    for i, image in render_pages(data, indexes, dpi):
        out[i] = boxes_to_text(recognise(image), image.shape[1])
    return out
