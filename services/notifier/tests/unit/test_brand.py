"""Brand settings: what is refused (naming the field), what an uploaded logo may be, what templates see."""

import pytest
from pydantic import ValidationError

from dunning_notifier.brand import EXAMPLE_BRAND, BrandIn, LogoError, brand_context, check_logo, iban_valid

pytestmark = pytest.mark.unit
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        pytest.param("DE89370400440532013000", True, id="de"),
        pytest.param("GB82WEST12345698765432", True, id="gb"),
        pytest.param("AT611904300234573201", True, id="at"),
        pytest.param("DE89370400440532013001", False, id="one-digit-off"),
        pytest.param("DE8937040044053201300", False, id="too-short"),
        pytest.param("D189370400440532013000", False, id="bad-country"),
    ],
)
def test_an_iban_is_checked_by_its_mod_97_digits(iban, valid):
    assert iban_valid(iban) is valid


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        pytest.param({"primary_color": "#12345"}, "primary_color", "String should match", id="colour-short"),
        pytest.param({"accent_color": "red"}, "accent_color", "String should match", id="colour-name"),
        pytest.param({"logo_url": "http://example.com/l.png"}, "logo_url", "must be an https:// URL", id="logo-http"),
        pytest.param({"reply_to": "Bob <b@x.example>"}, "reply_to", "not an e-mail address", id="reply-to-display"),
        pytest.param(
            {"bank": {**EXAMPLE_BRAND["bank"], "iban": "DE89 3704 0044 0532 0130 01"}},
            "bank.iban",
            "not a valid IBAN",
            id="iban",
        ),
        pytest.param({"bank": {**EXAMPLE_BRAND["bank"], "bic": "COBA"}}, "bank.bic", "not a BIC", id="bic"),
        pytest.param({"sender_name": "a\nb"}, "sender_name", "String should match", id="sender-newline"),
        pytest.param({"colour": "#000000"}, "colour", "Extra inputs are not permitted", id="unknown-field"),
    ],
)
def test_a_bad_brand_field_is_refused_by_name(change, field, message):
    with pytest.raises(ValidationError) as caught:
        BrandIn.model_validate({**EXAMPLE_BRAND, **change})
    [error] = caught.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == field
    assert message in error["msg"]


def test_the_example_brand_is_valid_and_its_iban_is_kept_compact():
    brand = BrandIn.model_validate(EXAMPLE_BRAND)
    assert brand.bank is not None and brand.bank.iban == "DE89370400440532013000"
    assert brand.bank.bic == "COBADEFFXXX"


def test_templates_see_every_key_and_an_uploaded_logo_wins_with_a_public_url():
    empty = brand_context(None, None, None)
    assert set(empty) >= {"sender_name", "reply_to", "logo_url", "primary_color", "signature", "bank", "postal_address"}
    assert all(v is None for v in empty.values())
    settings = BrandIn.model_validate(EXAMPLE_BRAND).model_dump(exclude_none=True)
    full = brand_context(settings, "ab" * 16 + ".png", "https://notifier.example/")
    assert full["logo_url"] == "https://notifier.example/v1/brand-logos/" + "ab" * 16 + ".png"
    assert full["bank"]["iban_grouped"] == "DE89 3704 0044 0532 0130 00"
    assert full["name"] == full["sender_name"] == "Brandt Billing"  # letters read `name`
    assert brand_context(settings, "ab" * 16 + ".png", None)["logo_url"] == EXAMPLE_BRAND["logo_url"]


def test_a_png_logo_is_named_by_its_content_hash():
    logo_id = check_logo(PNG_1PX, "image/png", 1024)
    assert logo_id.endswith(".png") and len(logo_id) == 36
    assert check_logo(PNG_1PX, "image/png", 1024) == logo_id


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        pytest.param(b"GIF89a....", "image/png", "not a PNG image", id="not-png"),
        pytest.param(PNG_1PX * 20, "image/png", "at most 1024 are accepted", id="too-large"),
        pytest.param(
            b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
            "image/svg+xml",
            "<script> is not allowed",
            id="svg-script",
        ),
        pytest.param(
            b"<svg xmlns='http://www.w3.org/2000/svg' onload='x()'/>", "image/svg+xml", "event handler", id="svg-onload"
        ),
        pytest.param(b"<!DOCTYPE svg [<!ENTITY a 'a'>]><svg/>", "image/svg+xml", "DOCTYPE", id="svg-entities"),
        pytest.param(
            b"<svg xmlns='http://www.w3.org/2000/svg' xmlns:x='http://www.w3.org/1999/xlink'><image x:href='https://evil.example/t.png'/></svg>",
            "image/svg+xml",
            "external references",
            id="svg-external",
        ),
        pytest.param(b"<svg", "image/svg+xml", "not well-formed", id="svg-broken"),
        pytest.param(b"<html/>", "image/svg+xml", "not <svg>", id="svg-root"),
        pytest.param(PNG_1PX, "image/gif", "Content-Type must be", id="gif"),
    ],
)
def test_a_bad_logo_is_refused_saying_why(content, content_type, message):
    with pytest.raises(LogoError, match=message):
        check_logo(content, content_type, 1024)


def test_a_plain_svg_logo_is_accepted():
    svg = b"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 10 10'><rect width='10' fill='#0b5394'/></svg>"
    assert check_logo(svg, "image/svg+xml", 1024).endswith(".svg")
