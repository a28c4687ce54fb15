"""Letter PDFs read back with pypdf: the address in the envelope window, the invoices, Japanese text,
page numbers, metadata, and the same bytes for the same delivery."""

import copy
import io

import pypdf
import pytest
from reportlab.lib.pagesizes import A4, LETTER

from dunning_notifier.letter_content import NoPostalAddress, compose
from dunning_notifier.letter_pdf import WINDOWS, render_pdf
from dunning_notifier.letters import LetterChannel
from dunning_notifier.outcomes import Delivery, Failed
from dunning_notifier.rendering import Renderer
from dunning_notifier.settings import Settings

SETTINGS = Settings(
    printmail_api_url="http://127.0.0.1:9",
    letter_from_name="Brandt Billing GmbH",
    letter_from_address_line1="Hauptstraße 1",
    letter_from_city="München",
    letter_from_zip="80331",
    letter_from_country="DE",
)
RENDERER = Renderer(sender_name="Brandt Billing")
BERLIN = {
    "name": "Acme Widgets GmbH",
    "lines": ["Friedrichstraße 100", "3. OG"],
    "postal_code": "10117",
    "city": "Berlin",
    "region": None,
    "country": "DE",
}


def stage(**customer) -> dict:
    return {
        "stage_id": "stg_1",
        "invoice_id": "inv_1",
        "tenant_id": "ten_1",
        "stage": "firm",
        "sequence": 2,
        "channel": "letter",
        "template": "firm",
        "scheduled_at": "2026-03-02T08:00:00Z",
        "fired_at": "2026-03-02T08:00:00.412Z",
        "invoice": {
            "external_id": "RE-31",
            "number": "INV-2026-00031",
            "currency": "EUR",
            "amount_due": "1000.00",
            "balance": "600.00",
            "issue_date": "2026-01-01",
            "due_date": "2026-01-31",
            "payment_url": "https://pay.example.com/i/RE-31",
        },
        "customer": {
            "customer_id": "cus_1",
            "name": "Acme Widgets GmbH",
            "email": "ap@acme.example",
            "locale": "en-US",
            "timezone": "Europe/Berlin",
            "postal_address": BERLIN,
            **customer,
        },
        "context": {},
    }


def notice(*invoices: dict) -> dict:
    data = stage()
    del data["invoice"], data["fired_at"], data["stage"], data["template"]
    data.update(composed_at="2026-03-09T08:30:12.101Z", notice_id="ntc_1", channel="letter")
    data["items"] = [
        {
            "invoice_id": f"inv_{i}",
            "stage_id": f"stg_{i}",
            "stage": "final",
            "sequence": 3,
            "template": "final",
            "invoice": inv,
            "charges": None,
        }
        for i, inv in enumerate(invoices)
    ]
    return data


def invoice(number: str, currency: str, amount: str, balance: str) -> dict:
    return {
        "external_id": number,
        "number": number,
        "currency": currency,
        "amount_due": amount,
        "balance": balance,
        "issue_date": "2026-01-01",
        "due_date": "2026-02-01",
        "payment_url": None,
    }


def pdf_of(payload: dict, settings: Settings = SETTINGS) -> bytes:
    letter, _, _ = compose(payload, RENDERER, settings)
    return render_pdf(letter)


def texts_with_positions(pdf: bytes, page: int = 0) -> list[tuple[str, float, float]]:
    """Every text run of a page with its position (points from the bottom-left corner)."""
    found: list[tuple[str, float, float]] = []

    def visit(text, cm, tm, font, size):
        if text.strip():
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            found.append((text.strip(), x, y))

    pypdf.PdfReader(io.BytesIO(pdf)).pages[page].extract_text(visitor_text=visit)
    return found


def in_window(x: float, y: float, paper: str, page_height: float) -> bool:
    w, eps = WINDOWS[paper], 0.01  # the PDF's coordinates are rounded to 5 decimals
    return w.left - eps <= x <= w.left + w.width and page_height - w.top - w.height <= y <= page_height - w.top + eps


@pytest.mark.parametrize(
    ("address", "paper", "expected_lines"),
    [
        pytest.param(
            BERLIN, "A4", ["Acme Widgets GmbH", "Friedrichstraße 100", "3. OG", "10117 Berlin"], id="a4-din5008"
        ),
        pytest.param(
            {
                "name": "Acme Widgets Inc.",
                "lines": ["500 Market St"],
                "postal_code": "94105",
                "city": "San Francisco",
                "region": "CA",
                "country": "US",
            },
            "LETTER",
            ["Acme Widgets Inc.", "500 Market St", "San Francisco, CA 94105", "UNITED STATES"],
            id="us-letter-abroad",
        ),
        pytest.param(
            {
                "name": "Internationale Maschinenbau- und Anlagenhandelsgesellschaft mbH & Co. KG",
                "lines": [
                    "z. Hd. Kreditorenbuchhaltung",
                    "Gebäude 7, Eingang C",
                    "Industriestraße 123-125",
                    "Postfach 4711",
                ],
                "postal_code": "1010",
                "city": "Wien",
                "region": None,
                "country": "AT",
            },
            "A4",
            ["Gebäude 7, Eingang C", "Postfach 4711", "1010 Wien", "AUSTRIA"],
            id="a4-seven-lines-abroad",
        ),
    ],
)
def test_the_address_is_printed_inside_the_envelope_window(address, paper, expected_lines):
    pdf = pdf_of(stage(postal_address=address))
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    width, height = (float(v) for v in reader.pages[0].mediabox.upper_right)
    assert (round(width), round(height)) == tuple(round(v) for v in (A4 if paper == "A4" else LETTER))
    runs = texts_with_positions(pdf)
    for line in expected_lines:
        hits = [(x, y) for text, x, y in runs if text == line]
        assert hits, f"{line!r} not on the first page: {runs[:12]}"
        assert all(in_window(x, y, paper, height) for x, y in hits), (line, hits)
    return_line = next((x, y) for text, x, y in runs if text.startswith("Brandt Billing GmbH ·"))
    assert in_window(*return_line, paper, height)
    recipient_top = max(y for text, x, y in runs if text == expected_lines[0])
    assert return_line[1] > recipient_top  # the return line sits above the address
    body = [y for text, x, y in runs if text.startswith("INV-2026-00031")]
    assert body and all(not in_window(x, y, paper, height) for text, x, y in runs if text.startswith("INV-"))


def test_the_invoices_amounts_and_totals_per_currency_are_listed():
    payload = notice(
        invoice("INV-A-1", "EUR", "1000.00", "600.00"),
        invoice("INV-A-2", "EUR", "250.50", "250.50"),
        invoice("INV-B-1", "USD", "99.00", "99.00"),
    )
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf_of(payload))).pages)
    for expected in ("INV-A-1", "INV-A-2", "INV-B-1", "€1,000.00", "€600.00", "€250.50", "$99.00"):
        assert expected in text
    assert "Total EUR" in text and "€850.50" in text  # 600.00 + 250.50
    assert "Total USD" in text


def test_payment_link_and_bank_details_from_the_brand():
    payload = stage()
    payload["brand"] = {
        "sender_name": "Brandt Billing GmbH",
        "bank": {"account_holder": "Brandt Billing GmbH", "iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
    }
    text = pypdf.PdfReader(io.BytesIO(pdf_of(payload))).pages[0].extract_text()
    assert "https://pay.example.com/i/RE-31" in text
    assert "IBAN DE89 3704 0044 0532 0130 00" in text and "BIC COBADEFFXXX" in text


def test_japanese_renders_with_a_cid_font_and_stays_extractable():
    address = {
        "name": "株式会社サンプル商事",
        "lines": ["千代田1-1"],
        "postal_code": "100-0001",
        "city": "千代田区",
        "region": "東京都",
        "country": "JP",
    }
    payload = stage(locale="ja-JP", timezone="Asia/Tokyo", name="株式会社サンプル商事", postal_address=address)
    payload["invoice"].update(currency="JPY", amount_due="120000", balance="120000")
    pdf = pdf_of(payload)
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = reader.pages[0].extract_text()
    assert "株式会社サンプル商事" in text and "東京都千代田区" in text
    assert "請求書番号" in text  # the table's header in Japanese
    fonts = {str(f["/BaseFont"]) for f in reader.pages[0]["/Resources"]["/Font"].values()}
    assert any("HeiseiKakuGo-W5" in f for f in fonts), fonts
    height = float(reader.pages[0].mediabox.top)
    runs = texts_with_positions(pdf)
    name = [(x, y) for t, x, y in runs if t == "株式会社サンプル商事"]
    assert name and all(in_window(x, y, "A4", height) for x, y in name)


def test_long_letters_number_their_pages_and_carry_metadata():
    payload = notice(*(invoice(f"INV-{i:03}", "EUR", "10.00", "10.00") for i in range(80)))
    reader = pypdf.PdfReader(io.BytesIO(pdf_of(payload)))
    pages = len(reader.pages)
    assert pages >= 2
    assert f"Page 1 of {pages}" in reader.pages[0].extract_text()
    assert f"Page {pages} of {pages}" in reader.pages[-1].extract_text()
    assert reader.metadata.author == "Brandt Billing GmbH"
    assert reader.metadata.title == compose(payload, RENDERER, SETTINGS)[0].title  # the subject line
    assert reader.metadata["/CreationDate"].startswith("D:20260309083012")  # composed_at, not the clock


def test_the_same_delivery_gives_the_same_bytes():
    assert pdf_of(stage()) == pdf_of(copy.deepcopy(stage()))
    later = stage()
    later["fired_at"] = "2026-03-03T08:00:00Z"
    assert pdf_of(later) != pdf_of(stage())


@pytest.mark.parametrize(
    "address",
    [
        pytest.param(None, id="none"),
        pytest.param({**BERLIN, "lines": []}, id="no-lines"),
        pytest.param({**BERLIN, "city": ""}, id="no-city"),
        pytest.param({**BERLIN, "country": "Germany"}, id="country-not-iso"),
    ],
)
async def test_no_usable_address_fails_the_delivery_permanently(address):
    payload = stage(postal_address=address)
    with pytest.raises(NoPostalAddress):
        compose(payload, RENDERER, SETTINGS)
    d = Delivery("dlv_1", "ten_1", "inv_1", "stg_1", "firm", "letter", None, 1, payload)
    outcome = await LetterChannel(SETTINGS, RENDERER).open_session().send(d)
    assert isinstance(outcome, Failed) and outcome.error_code == "invalid_recipient" and outcome.permanent


IPAEX = "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf"  # Debian's fonts-ipaexfont-gothic


@pytest.mark.skipif(not __import__("os").path.exists(IPAEX), reason="no IPAexGothic on this machine")
def test_a_configured_cjk_truetype_font_is_embedded():
    address = {
        "name": "株式会社サンプル商事",
        "lines": ["千代田1-1"],
        "postal_code": "100-0001",
        "city": "千代田区",
        "region": "東京都",
        "country": "JP",
    }
    payload = stage(locale="ja-JP", name="株式会社サンプル商事", postal_address=address)
    pdf = pdf_of(payload, SETTINGS.model_copy(update={"letter_cjk_font_file": IPAEX}))
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert "株式会社サンプル商事" in reader.pages[0].extract_text()
    fonts = [f.get_object() for f in reader.pages[0]["/Resources"]["/Font"].values()]
    embedded = [f for f in fonts if "/DescendantFonts" in f or "/FontDescriptor" in f]
    assert any(
        "/FontFile2" in (f["/DescendantFonts"][0].get_object() if "/DescendantFonts" in f else f)["/FontDescriptor"]
        for f in embedded
    ), [str(f.get("/BaseFont")) for f in fonts]


class _Brands:
    """The renderer's tenant templates store as letters use it: `brand(tenant_id)`, brand.brand_context's
    shape (Renderer.brand_for), and no template of the tenant's own (`find`)."""

    def find(self, *args):
        return None

    def __init__(self, brands: dict):
        self.brands = brands

    def brand(self, tenant_id):
        empty = dict.fromkeys(("sender_name", "name", "postal_address", "paper", "bank"))
        return self.brands.get(tenant_id, empty)


def test_the_tenants_brand_gives_the_return_address_paper_and_the_providers_from():
    vienna = {
        "name": "Wiener Inkasso GmbH",
        "lines": ["Ring 1"],
        "postal_code": "1010",
        "city": "Wien",
        "country": "AT",
    }
    renderer = Renderer(sender_name="Brandt Billing")
    renderer.tenants = _Brands(
        {"ten_1": {"sender_name": "Wiener Inkasso GmbH", "postal_address": vienna, "paper": "LETTER", "bank": None}}
    )
    letter, address, sender = compose(stage(), renderer, SETTINGS)
    assert letter.return_line == "Wiener Inkasso GmbH · Ring 1 · 1010 Wien" and letter.paper == "LETTER"
    assert letter.recipient[-1] == "GERMANY"  # sent from Austria to Germany
    d = Delivery("dlv_1", "ten_1", "inv_1", "stg_1", "firm", "letter", None, 1, stage())
    form = LetterChannel(SETTINGS, renderer).form(d, address, sender)
    assert form["from[name]"] == "Wiener Inkasso GmbH" and form["from[address_country]"] == "AT"
    assert form["to[address_city]"] == "Berlin" and form["use_type"] == "operational"

    renderer.tenants = _Brands({})  # a tenant without a brand: the notifier's settings
    letter, _, sender = compose(stage(), renderer, SETTINGS)
    assert letter.return_line.startswith("Brandt Billing GmbH · Hauptstraße 1") and letter.paper == "A4"
    assert sender["country"] == "DE"
