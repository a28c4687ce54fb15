"""The shipped templates in every language: catalogues complete and in step with the templates,
placeholders kept, no English left in a translated reminder, no fixed facts in the words, the
fallback chain (de-AT -> de, unknown -> English), and English SMS that fit two GSM-7 segments."""

import copy
import re
from pathlib import Path

import orjson
import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from dunning.events import schemas_dir
from dunning_notifier.rendering import CHANNEL_PARTS, Renderer, RenderError
from dunning_notifier.translations import LOCALE_DIR, languages, template_callables, translations_for

pytestmark = pytest.mark.unit
SERVICE_DIR = Path(__file__).parents[2]
LANGUAGES = ["de", "es", "fr", "it", "ja", "nl", "pt"]
STAGES = [
    "pre_due",
    "soft",
    "firm",
    "final",
    "collections",
    "generic",
    "promise_broken",
    "instalment_pre_due",
    "instalment_overdue",
    "handed_over",
]
CONTEXTS = {
    "promise_broken": {"kind": "promise_broken", "promised_amount": "500.00", "promised_date": "2026-11-20"},
    "instalment_pre_due": {
        "kind": "instalment",
        "number": "2",
        "instalments": "4",
        "amount": "312.50",
        "due_date": "2026-11-26",
    },
    "instalment_overdue": {
        "kind": "instalment",
        "number": "3",
        "instalments": "4",
        "amount": "312.50",
        "due_date": "2026-11-20",
    },
    "handed_over": {"agency": {"name": "Credita GmbH", "contact_email": "cases@credita.example"}},
    "firm": {"kind": "stage", "next_stage": "final", "next_stage_on": "2026-12-01"},
    "final": {"kind": "stage", "next_stage": "collections", "next_stage_on": "2026-12-08"},
}
CHARGES = {
    "currency": "EUR",
    "late_fee": "40.00",
    "total_late_fees": "40.00",
    "total_interest": "6.56",
    "total_due": "1296.56",
    "interest_to": "2026-11-23",
    "day_count": "ACT/365F",
    "annual_rate": "10.15",
}
# Words of the English templates that no translation may keep (case-sensitive, whole words).
ENGLISH = re.compile(
    r"\b(invoice|Invoice|overdue|Please|Dear|Hello|regards|outstanding|reminder|Reminder|payment|instalment|"
    r"Instalment|Issued|Interest|handed|escalated|promptly)\b"
)
NATIVE = {
    "de": "Rechnung",
    "es": "factura",
    "fr": "facture",
    "it": "fattura",
    "ja": "請求書",
    "nl": "factuur",
    "pt": "fatura",
}
REGION = {"de": "de-AT", "es": "es-MX", "fr": "fr-CA", "it": "it-IT", "ja": "ja-JP", "nl": "nl-BE", "pt": "pt-BR"}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")


def catalogue(name: str):
    path = LOCALE_DIR / "messages.pot" if name == "pot" else LOCALE_DIR / name / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as f:
        return read_po(f, locale=None if name == "pot" else name)


def entries(name: str) -> list:
    return [m for m in catalogue(name) if m.id]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(sender_name="Accounts Receivable")


def reminder(stage_data, stage: str, locale: str) -> dict:
    data = stage_data(stage=stage, locale=locale, currency="EUR", amount="1250.00")
    data["context"] = copy.deepcopy(CONTEXTS.get(stage))
    data["charges"] = dict(CHARGES)
    return data


def notice(locale: str) -> dict:
    path = schemas_dir() / "examples" / "NoticeComposed" / "1" / "eur-two-stages-and-an-overdue-invoice.json"
    data = orjson.loads(path.read_bytes())["data"]
    data["customer"]["locale"] = locale
    return data


def test_every_language_is_shipped():
    assert languages() == LANGUAGES


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_msgid_is_translated_with_the_same_placeholders(lang):
    cat = catalogue(lang)
    plurals = cat.num_plurals
    for m in entries(lang):
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        forms = m.string if isinstance(m.string, tuple) else (m.string,)
        assert "fuzzy" not in m.flags, (lang, m.id)
        assert len(forms) == (plurals if m.pluralizable else 1), (lang, m.id)
        for form in forms:
            assert form.strip(), f"{lang}: {m.id!r} has no translation"
            assert set(PLACEHOLDER.findall(form)) == set(PLACEHOLDER.findall(ids[-1])), (lang, m.id, form)
            assert form.count("%") == ids[-1].count("%"), (lang, m.id, form)  # no stray or lost %


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_catalogue_has_exactly_the_templates_msgids(lang):
    def keys(name):
        return {(m.context, m.id if isinstance(m.id, str) else m.id[0]) for m in entries(name)}

    assert keys(lang) == keys("pot")


def test_the_pot_is_extracted_from_the_templates_as_they_are():
    with (SERVICE_DIR / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f, "babel.cfg")
    extracted = {
        (context, msgid if isinstance(msgid, str) else msgid[0])
        for _file, _line, msgid, _comments, context in extract_from_dir(
            str(SERVICE_DIR), method_map, options_map, keywords=DEFAULT_KEYWORDS, comment_tags=("Translators:",)
        )
    }
    in_pot = {(m.context, m.id if isinstance(m.id, str) else m.id[0]) for m in entries("pot")}
    assert extracted == in_pot, "run `make messages` and translate what it adds (docs/templates-i18n.md)"


def test_no_msgid_states_a_fixed_fact():
    """Days, fees and amounts come from the payload (placeholders), never from the words."""
    for m in entries("pot"):
        for msgid in m.id if isinstance(m.id, tuple) else (m.id,):
            assert not re.search(r"\d|[€$£¥]", PLACEHOLDER.sub("", msgid)), msgid


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("channel", sorted(CHANNEL_PARTS))
@pytest.mark.parametrize("stage", STAGES)
def test_a_translated_reminder_keeps_no_english_sentence(stage_data, renderer, lang, channel, stage):
    out = renderer.render(reminder(stage_data, stage, REGION[lang]), channel)
    english = renderer.render(reminder(stage_data, stage, "en-US"), channel)
    for part, words in (("subject", out.subject), ("text", out.text), ("html", out.html)):
        assert not ENGLISH.findall(words), f"{lang} {channel} {stage} {part}: {ENGLISH.findall(words)}\n{words}"
    if channel != "sms":  # the details list the invoice, named in the customer's language
        assert NATIVE[lang].lower() in out.text.lower()
    assert out.text != english.text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_consolidated_notice_is_translated_too(renderer, lang):
    out = renderer.render(notice(lang))
    for words in (out.subject, out.text, out.html):
        assert not ENGLISH.findall(words), ENGLISH.findall(words)
    assert NATIVE[lang].lower() in out.text.lower()


@pytest.mark.parametrize(
    ("tag", "word"),
    [
        pytest.param("de-AT", "Rechnung", id="de-AT-falls-back-to-de"),
        pytest.param("de", "Rechnung", id="de"),
        pytest.param("pt-BR", "Fatura", id="pt-BR-falls-back-to-pt"),
        pytest.param("pt_PT", "Fatura", id="pt-PT-falls-back-to-pt"),
        pytest.param("ja-JP", "請求書", id="ja-JP"),
        pytest.param("sv-SE", "Invoice", id="unknown-language-is-english"),
        pytest.param("en-GB", "Invoice", id="english"),
        pytest.param(None, "Invoice", id="none"),
        pytest.param("../../etc", "Invoice", id="garbage"),
    ],
)
def test_the_catalogue_falls_back_from_region_to_language_to_english(tag, word):
    assert translations_for(tag).gettext("Invoice") == word


def test_a_locale_without_a_catalogue_renders_english(stage_data, renderer):
    out = renderer.render(reminder(stage_data, "firm", "sv-SE"))
    assert "Overdue notice" in out.subject and "past due" in out.text


@pytest.mark.parametrize(
    ("locale", "one", "three"),
    [
        pytest.param("en-US", "1 day", "3 days", id="en"),
        pytest.param("de-DE", "1 Tag", "3 Tage", id="de"),
        pytest.param("fr-FR", "1 jour", "3 jours", id="fr"),
        pytest.param("ja-JP", "1日", "3日", id="ja-one-form"),
    ],
)
def test_day_counts_take_the_languages_plural_forms(renderer, locale, one, three):
    template = renderer.env.from_string("{{ 1|days }}/{{ 3|days }}")
    assert template.render(template_callables(locale)) == f"{one}/{three}"


def test_collections_escalates_without_claiming_a_hand_over(stage_data, renderer):
    for channel in CHANNEL_PARTS:
        out = renderer.render(reminder(stage_data, "collections", "en-US"), channel)
        assert "handed over" not in out.subject + out.text + out.html
        assert "partner" not in out.text and "agency" not in out.text


def test_handed_over_names_the_agency_and_needs_it(stage_data, renderer):
    data = reminder(stage_data, "handed_over", "de-DE")
    out = renderer.render(data)
    assert "Credita GmbH" in out.subject and "cases@credita.example" in out.text
    assert "Online bezahlen" not in out.text  # payment goes to the agency now
    data["context"] = None
    data["agency"] = {"name": "Inkasso Nord GmbH"}  # the top-level key is read too
    assert "Inkasso Nord GmbH" in renderer.render(data, "sms").text
    data.pop("agency")
    with pytest.raises(RenderError, match="agency"):
        renderer.render(data)


def septets(text: str) -> int:
    assert set(text) <= GSM7 | GSM7_EXTENSION, sorted(set(text) - GSM7 - GSM7_EXTENSION)
    return len(text) + sum(c in GSM7_EXTENSION for c in text)


@pytest.mark.parametrize("stage", STAGES)
def test_an_english_sms_is_gsm7_and_fits_two_segments(stage_data, renderer, stage):
    data = reminder(stage_data, stage, "en-US")
    data["customer"]["name"] = "Acme Widgets Inc."
    data["invoice"]["payment_url"] = "https://pay.example.com/i/inv_01JD8X0000000000"
    text = renderer.render(data, "sms").text
    assert "\n" not in text and text == text.strip()
    assert septets(text) <= 2 * 153, text


@pytest.mark.parametrize("stage", STAGES)
def test_a_letter_has_a_subject_and_paragraphs(stage_data, renderer, stage):
    out = renderer.render(reminder(stage_data, stage, "fr-FR"), "letter")
    assert out.subject and not out.html
    assert len([p for p in out.text.split("\n\n") if p.strip()]) >= 3
