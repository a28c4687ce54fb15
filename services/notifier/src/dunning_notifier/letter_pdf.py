"""A reminder letter as a PDF (ReportLab): the page layout, fonts and metadata; letters.py says what goes in.

Paper: A4 laid out to DIN 5008 form B, or US Letter (letters.paper_for picks by country). The
recipient's address is printed where a window envelope shows it:
- A4, DIN 5008 form B (for a DL / C5/6 window envelope, DIN 680): the address field is 20 mm from the
  left edge and 45 mm from the top, 85 x 45 mm; its first 5 mm hold the sender's return line (the
  "Rücksendeangabe", in small type), then 12.7 mm for endorsements (left empty), then the address.
  Fold marks at 105 and 210 mm, the punch mark at 148.5 mm; the text starts at 98.5 mm.
- US Letter, tri-folded into a #10 window envelope (window 4 1/2 x 1 1/8 in at 7/8 in from the left):
  the field is 0.875 in from the left and 2 in from the top, 3.5 x 1.25 in, the return line in its
  first 0.2 in. Window positions vary by envelope maker: check yours (docs/channels-letters.md).

Fonts: the PDF standard Helvetica when every character is in its encoding (Western European
languages); ReportLab's built-in CID fonts when the text has Chinese, Japanese or Korean characters
(HeiseiKakuGo-W5 / HeiseiMin-W3 for Japanese: the reader's own CJK fonts draw them, the text stays
extractable); otherwise Bitstream Vera (shipped with ReportLab, embedded) for other Latin letters.
The output is deterministic: the document id is fixed (ReportLab's invariant mode) and the creation
date is the letter's own `created_at`, so a retry sends the same bytes.
"""

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import reportlab
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch, mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph, Spacer, Table, TableStyle
from reportlab.platypus.flowables import KeepTogether


@dataclass(frozen=True)
class Window:
    """The envelope window on the first page, in points from the page's top-left corner."""

    left: float
    top: float
    width: float
    height: float
    return_zone: float  # the sender's return line, at the top of the window
    address_offset: float  # where the recipient's address starts, from the window's top
    standard: str


WINDOWS = {
    "A4": Window(20 * mm, 45 * mm, 85 * mm, 45 * mm, 5 * mm, 17.7 * mm, "DIN 5008 form B"),
    "LETTER": Window(0.875 * inch, 2 * inch, 3.5 * inch, 1.25 * inch, 0.2 * inch, 0.3 * inch, "US #10 window"),
}
PAGE_SIZES = {"A4": A4, "LETTER": LETTER}


@dataclass(frozen=True)
class InvoiceLine:
    number: str
    due_date: str  # formatted for the reader
    amount: str
    balance: str


@dataclass(frozen=True)
class Letter:
    """Everything on the page, already worded and formatted (letters.compose)."""

    paper: str  # "A4" | "LETTER"
    language: str  # the customer's language ("ja", "de", ...): picks the CJK font
    title: str  # the PDF's title metadata, and the subject line
    author: str  # the sender: the PDF's author metadata
    created_at: datetime  # the PDF's creation date (fixed per delivery)
    return_line: str
    recipient: tuple[str, ...]  # the address block, one line each
    date_line: str
    body: tuple[str, ...]  # paragraphs
    labels: dict[str, str]  # column headers and captions (letters.LABELS)
    invoices: tuple[InvoiceLine, ...]
    totals: tuple[tuple[str, str], ...]  # (currency, total balance formatted)
    payment: tuple[str, ...] = field(default=())  # payment link, bank details
    cjk_font_file: str | None = None  # a TrueType CJK font to embed (else the built-in CID fonts)


_VERA = Path(reportlab.__file__).parent / "fonts" / "Vera.ttf"
_VERA_BOLD = _VERA.with_name("VeraBd.ttf")
_LATIN = frozenset({"Helvetica", "Helvetica-Bold", "Vera", "VeraBd"})
_CJK = {"ja": ("HeiseiKakuGo-W5", "HeiseiMin-W3"), "zh": ("STSong-Light", "STSong-Light")}
_CJK_DEFAULT = ("HeiseiKakuGo-W5", "HeiseiMin-W3")
_KO = ("HYGothic-Medium", "HYSMyeongJo-Medium")


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x3000 <= o <= 0x9FFF  # CJK punctuation, kana, CJK unified ideographs
        or 0xAC00 <= o <= 0xD7AF  # Hangul
        or 0xF900 <= o <= 0xFAFF
        or 0xFF00 <= o <= 0xFFEF  # full-width forms
    )


@cache
def _registered(name: str, path: str | None = None) -> str:
    """`name` registered once: a TrueType file (embedded, subset) when `path` is given, else a CID font."""
    pdfmetrics.registerFont(TTFont(name, path) if path else UnicodeCIDFont(name))
    return name


def font_for(text: str, language: str, *, bold: bool = False, cjk_file: str | None = None) -> str:
    """A font able to draw `text` (see the module docstring); `cjk_file`: a TrueType CJK font to embed
    instead of the built-in CID fonts (which the reader supplies)."""
    if any(_is_cjk(ch) for ch in text):
        if cjk_file:
            return _registered("LetterCJK", cjk_file)
        hangul = any(0xAC00 <= ord(ch) <= 0xD7AF for ch in text)
        names = _KO if hangul or language == "ko" else _CJK.get(language, _CJK_DEFAULT)
        return _registered(names[0])
    try:
        text.encode("cp1252")
        return "Helvetica-Bold" if bold else "Helvetica"
    except UnicodeEncodeError:
        return _registered("VeraBd", str(_VERA_BOLD)) if bold else _registered("Vera", str(_VERA))


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_pdf(letter: Letter) -> bytes:
    """The letter as PDF bytes; the same Letter always gives the same bytes."""
    page_w, page_h = PAGE_SIZES[letter.paper]
    window = WINDOWS[letter.paper]
    left, right = (25 * mm, 20 * mm) if letter.paper == "A4" else (1 * inch, 0.75 * inch)
    first_top = 98.5 * mm if letter.paper == "A4" else window.top + window.height + 0.6 * inch

    def font(text: str, bold: bool = False) -> str:
        return font_for(text, letter.language, bold=bold, cjk_file=letter.cjk_font_file)

    def para(text: str, kind: str) -> Paragraph:
        size, leading, after = {"body": (10.5, 14, 7), "subject": (11.5, 15, 12), "small": (9, 12, 2)}[kind]
        name = font(text, bold=kind == "subject")
        style = ParagraphStyle(
            f"{kind}-{name}",
            fontName=name,
            fontSize=size,
            leading=leading,
            spaceAfter=after,
            wordWrap="CJK" if name not in _LATIN else None,
        )
        return Paragraph(_esc(text).replace("\n", "<br/>"), style)

    def first_page(canvas: Canvas, doc: BaseDocTemplate) -> None:
        top = page_h - window.top
        canvas.setFont(font(letter.return_line), 7)
        canvas.drawString(window.left, top - window.return_zone + 1.5 * mm, letter.return_line[:110])
        canvas.setLineWidth(0.3)
        rule = top - window.return_zone + 1 * mm
        canvas.line(window.left, rule, window.left + window.width, rule)
        size, leading = _address_type(letter.recipient, window)
        y = top - window.address_offset - size
        for i, line in enumerate(letter.recipient):
            name = font(line, bold=i == 0)
            width = pdfmetrics.stringWidth(line, name, size)
            canvas.setFont(name, size * min(1.0, window.width / width) if width else size)  # a long line shrinks
            canvas.drawString(window.left, y, line)
            y -= leading
        canvas.setFont(font(letter.date_line), 10)
        canvas.drawRightString(page_w - right, top - 5 * mm - 10, letter.date_line)
        if letter.paper == "A4":  # fold marks (105 / 210 mm) and the punch mark (148.5 mm)
            for at, length in ((105 * mm, 5 * mm), (210 * mm, 5 * mm), (148.5 * mm, 7 * mm)):
                canvas.line(3 * mm, page_h - at, 3 * mm + length, page_h - at)

    first = Frame(left, 25 * mm, page_w - left - right, page_h - first_top - 25 * mm, id="first", showBoundary=0)
    later = Frame(left, 25 * mm, page_w - left - right, page_h - 45 * mm, id="later", showBoundary=0)
    buf = io.BytesIO()
    doc = BaseDocTemplate(
        buf,
        pagesize=(page_w, page_h),
        title=letter.title,
        author=letter.author,
        subject=letter.title,
        creator="dunning-notifier",
        invariant=1,
        pageTemplates=[
            PageTemplate("first", frames=[first], onPage=first_page, autoNextPageTemplate="later"),
            PageTemplate("later", frames=[later]),
        ],
    )
    story: list = [para(letter.title, "subject")]
    story += [para(p, "body") for p in letter.body]
    story.append(Spacer(1, 4))
    story.append(_invoice_table(letter, font, page_w - left - right))
    if letter.payment:
        block = [Spacer(1, 8), para(letter.labels["payment"], "subject")]
        block += [para(line, "small") for line in letter.payment]
        story.append(KeepTogether(block))
    created = letter.created_at.astimezone(UTC)
    label = letter.labels["page"]

    def canvasmaker(*args, **kwargs) -> Canvas:
        return _NumberedCanvas(*args, label=label, font=font(label), right=right, created=created, **kwargs)

    doc.build(story, canvasmaker=canvasmaker)
    return buf.getvalue()


def _address_type(lines: tuple[str, ...], window: Window) -> tuple[float, float]:
    """(font size, leading) that fit every address line in the window below its endorsement zone:
    10 / 12 pt, closer together (and smaller) for an address of many lines."""
    size, leading, room = 10.0, 12.0, window.height - window.address_offset - 1
    if len(lines) > 1 and size + leading * (len(lines) - 1) > room:
        leading = (room - size) / (len(lines) - 1)
        size = min(size, leading - 0.5)
        leading = (room - size) / (len(lines) - 1)
    return size, leading


def _invoice_table(letter: Letter, font, width: float) -> Table:
    """Number, due date, amount, balance per invoice, then a total per currency; each cell in a font
    that can draw it (`font(text, bold)`)."""
    labels = letter.labels
    rows = [[labels["invoice"], labels["due_date"], labels["amount"], labels["balance"]]]
    rows += [[i.number, i.due_date, i.amount, i.balance] for i in letter.invoices]
    for currency, total in letter.totals:
        rows.append([f"{labels['total']} {currency}", "", "", total])
    table = Table(rows, colWidths=[width * 0.34, width * 0.22, width * 0.22, width * 0.22], repeatRows=1)
    n = len(letter.invoices)
    style: list = [
        ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
        ("LINEABOVE", (0, n + 1), (-1, n + 1), 0.6, colors.black),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
    ]
    for r, row in enumerate(rows):
        bold = r == 0 or r > n
        for c, cell in enumerate(row):
            style.append(("FONT", (c, r), (c, r), font(cell, bold=bold), 9.5))
    table.setStyle(TableStyle(style))
    return table


class _NumberedCanvas(Canvas):
    """Writes "Page n of m" on every page (the pages are held until the count is known), with the
    letter's fixed creation date."""

    def __init__(self, *args, label: str, font: str, right: float, created: datetime, **kwargs):
        super().__init__(*args, **kwargs)
        self._pages: list[dict] = []
        self._label, self._font, self._right = label, font, right
        stamp = created.strftime("D:%Y%m%d%H%M%S+00'00'")
        self.setDateFormatter(lambda *_: stamp)

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for state in self._pages:
            self.__dict__.update(state)
            width = self._pagesize[0]
            self.setFont(self._font, 8)
            self.drawRightString(width - self._right, 12 * mm, self._label.format(n=self._pageNumber, total=total))
            super().showPage()
        super().save()
