"""An SMS text's encoding and exact segment count (GSM 03.38 basic + extension table, 160/153; UCS-2,
70/67; pairs never split across segments), and the cut to a segment cap at a word boundary."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunning_notifier.sms_text import ELLIPSIS, GSM7_BASIC, GSM7_EXTENSION, fit, measure, segments_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text, encoding, segments",
    [
        pytest.param("", "GSM-7", 0, id="empty"),
        pytest.param("a" * 160, "GSM-7", 1, id="160-septets-one-message"),
        pytest.param("a" * 161, "GSM-7", 2, id="161-two-segments"),
        pytest.param("a" * 306, "GSM-7", 2, id="2x153"),
        pytest.param("a" * 307, "GSM-7", 3, id="307-three"),
        pytest.param("€" * 80, "GSM-7", 1, id="extension-chars-count-two"),
        pytest.param("€" * 81, "GSM-7", 2, id="162-septets"),
        pytest.param("a" * 152 + "€" + "a" * 10, "GSM-7", 2, id="an-escape-pair-is-not-split"),
        pytest.param("a" * 151 + "€" + "a" * 153, "GSM-7", 2, id="a-pair-that-fits-stays"),
        pytest.param("a" * 152 + "€" + "a" * 152, "GSM-7", 3, id="a-moved-pair-pushes-a-third"),
        pytest.param("Grüße, Ñandù! ¿Què? @£$¥ ÆØÅ ß", "GSM-7", 1, id="gsm-letters-beyond-ascii"),
        pytest.param("ç" * 10, "UCS-2", 1, id="lower-c-cedilla-is-not-gsm"),
        pytest.param("ą" * 70, "UCS-2", 1, id="70-ucs2"),
        pytest.param("ą" * 71, "UCS-2", 2, id="71-ucs2"),
        pytest.param("ą" * 134, "UCS-2", 2, id="2x67"),
        pytest.param("😀" * 35, "UCS-2", 1, id="emoji-are-two-code-units"),
        pytest.param("a" * 66 + "😀" + "a" * 10, "UCS-2", 2, id="a-surrogate-pair-is-not-split"),
        pytest.param("a" * 66 + "😀" + "a" * 66, "UCS-2", 3, id="a-moved-surrogate-pair-pushes-a-third"),
        pytest.param("…", "UCS-2", 1, id="the-unicode-ellipsis-is-not-gsm"),
    ],
)
def test_encoding_and_segments(text, encoding, segments):
    measured = measure(text)
    assert (measured.encoding, measured.segments) == (encoding, segments)


def test_the_gsm_tables_have_their_sizes():
    assert len(GSM7_BASIC) == 127 and len(GSM7_EXTENSION) == 10  # 128 positions less ESC


@pytest.mark.parametrize(
    "words, cap, encoding",
    [
        pytest.param(["Rechnung"] * 200, 4, "GSM-7", id="gsm-cut-with-three-dots"),
        pytest.param(["Rechnung"] * 200, 1, "GSM-7", id="gsm-one-message"),
        pytest.param(["счёт"] * 200, 4, "UCS-2", id="ucs2-cut-with-ellipsis"),
        pytest.param(["請求書"] * 200, 2, "UCS-2", id="cjk"),
    ],
)
def test_a_long_text_is_cut_at_a_word_within_the_cap_in_its_encoding(words, cap, encoding):
    text = " ".join(words)
    cut = fit(text, cap)
    assert cut.truncated and cut.segments == cap and cut.encoding == encoding
    assert cut.text.endswith(ELLIPSIS[encoding]) and measure(cut.text).encoding == encoding
    body = cut.text.removesuffix(ELLIPSIS[encoding])
    assert text.startswith(body) and text[len(body)] == " "  # at a word boundary
    assert segments_of(body + " " + words[0] + ELLIPSIS[encoding]) > cap  # the next word would not fit


def test_a_text_within_the_cap_is_sent_whole():
    assert fit("  Invoice 1 is due.  ", 4) == measure("Invoice 1 is due.")


def test_one_word_longer_than_the_cap_is_cut_inside_it():
    cut = fit("x" * 1000, 2)
    assert cut.truncated and cut.segments == 2 and cut.text.endswith("...")


@given(st.text(alphabet=st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION) + ["ą", "😀", " "]), max_size=900))
def test_fit_never_exceeds_the_cap(text):
    cut = fit(text, 3)
    assert cut.segments <= 3 and measure(cut.text).segments == cut.segments
