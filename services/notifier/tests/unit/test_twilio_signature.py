"""X-Twilio-Signature: our verifier against Twilio's published test vectors (the URL with and without
its default port, repeated parameters) and against the official library's RequestValidator."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from dunning_notifier import twilio_signature

pytestmark = pytest.mark.unit
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675309"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
]


@pytest.mark.parametrize(
    "url, params, signature",
    [
        pytest.param(URL, PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", id="compute"),
        pytest.param(
            URL,
            [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")],
            "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
            id="repeated-parameters-sorted-once",
        ),
        pytest.param(URL, PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=", id="signed-with-443"),
        pytest.param(URL.replace("https", "http"), PARAMS, "0ZXoZLH/DfblKGATFgpif+LLRf4=", id="signed-with-80"),
        pytest.param(URL.replace(".com/", ".com:1234/"), PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", id="port-removed"),
        pytest.param(
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2", PARAMS, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=", id="http-port"
        ),
    ],
)
def test_twilios_vectors_verify(url, params, signature):
    assert twilio_signature.valid(TOKEN, url, params, signature)
    assert not twilio_signature.valid("54321", url, params, signature)
    assert not twilio_signature.valid(TOKEN, url, [*params, ("Extra", "1")], signature)


@pytest.mark.parametrize("signature", [None, "", "RSOYDt4T1cUTdK1PDd93/VVr8B8", "x" * 28])
def test_a_missing_or_wrong_signature_is_refused(signature):
    assert not twilio_signature.valid(TOKEN, URL, PARAMS, signature)


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(
    token=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
    path=st.text(alphabet="abcdefghij/", max_size=20),
    params=st.dictionaries(st.text(alphabet="ABCDEFGHIJabcdefghij", min_size=1, max_size=12), _text, max_size=8),
)
def test_it_agrees_with_the_official_request_validator(token, path, params):
    url = f"https://notifier.example.com/v1/{path}"
    ours = twilio_signature.compute(token, url, params.items())
    assert ours == RequestValidator(token).compute_signature(url, params)
    assert RequestValidator(token).validate(url, params, ours)
    assert twilio_signature.valid(
        token, url, list(params.items()), RequestValidator(token).compute_signature(url, params)
    )
