"""References in what a payer writes: ISO 11649 creditor references (`RF…`, mod-97 checked like an
IBAN), an invoice's own creditor reference (`creditor_reference_for`), and the tokens of a remittance
text that may be invoice numbers or external ids (matching.py decides with them)."""

import re
from dataclasses import dataclass

# An RF reference is at most 25 characters: RF, two check digits, up to 21 alphanumerics.
_RF_MAX_BODY = 21
_RF_START = re.compile(r"^RF[0-9]{2}[0-9A-Z]{0,21}$")
_ALNUM = re.compile(r"^[0-9A-Z]+$")
_SPLIT = re.compile(r"[\s,;]+")
_TRIM = ".:()[]{}<>\"'#"


def _mod97(text: str) -> int:
    """ISO 7064 mod 97-10 of alphanumerics, letters as 10..35 (as IBAN does)."""
    return int("".join(str(int(char, 36)) for char in text) or "0") % 97  # the digits as one number


def is_creditor_reference(reference: str) -> bool:
    """A valid ISO 11649 reference in compact form (upper case, no spaces): RF, check digits, body."""
    if not _RF_START.fullmatch(reference) or len(reference) < 5:
        return False
    return _mod97(reference[4:] + reference[:4]) == 1


_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]+")


def compact(text: str) -> str:
    """A reference in compact form: its ASCII alphanumerics only, upper case."""
    return _NOT_ALNUM.sub("", text).upper()


def creditor_reference_for(number: str) -> str | None:
    """The ISO 11649 creditor reference an invoice is paid with: RF, check digits, then the invoice
    number's alphanumerics upper-cased ("INV-1001" → "RF06INV1001"). None when the number has no
    alphanumerics or more than 21 of them (an RF reference cannot carry it)."""
    body = compact(number)
    if not body or len(body) > _RF_MAX_BODY:
        return None
    check = 98 - _mod97(body + "RF00")
    return f"RF{check:02d}{body}"


def normalise_token(token: str) -> str:
    """How an invoice number / external id is compared with a remittance's token: upper case, stripped
    of surrounding punctuation."""
    return token.strip(_TRIM).strip().upper()


@dataclass(frozen=True)
class References:
    """What a remittance text names: valid creditor references (compact) and candidate tokens."""

    creditor_references: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()


def _creditor_references(words: list[str]) -> tuple[list[str], set[int]]:
    """RF references among the words, in print form ("RF18 5390 0754 7034") or compact: the longest
    run of words from an RF word that validates; and the positions of the words they took."""
    found: list[str] = []
    taken: set[int] = set()
    for i, word in enumerate(words):
        head = word.upper().strip(_TRIM)
        if not (head.startswith("RF") and len(head) >= 4 and head[2:4].isdigit()):
            continue
        run = [head]
        for nxt in words[i + 1 : i + 7]:
            part = nxt.upper().strip(_TRIM)
            if not _ALNUM.fullmatch(part) or len("".join(run)) + len(part) > 4 + _RF_MAX_BODY:
                break
            run.append(part)
        for end in range(len(run), 0, -1):
            candidate = "".join(run[:end])
            if is_creditor_reference(candidate):
                found.append(candidate)
                taken.update(range(i, i + end))
                break
    return found, taken


def references_in(text: str | None) -> References:
    """The creditor references (ISO 11649, mod-97 checked; an invalid RF is not one) and the candidate
    invoice-number tokens of a remittance text. Tokens are split on whitespace, commas and semicolons,
    trimmed of punctuation and upper-cased; a token with slashes ("2026/0042") is kept whole and its
    parts are kept too. The words of a valid RF reference are not tokens."""
    if not text:
        return References()
    words = [w for w in _SPLIT.split(text) if w]
    # upper() maps character by character, so a word's upper case is part of the text's: without
    # "RF" there, no word starts an RF reference (most remittances)
    refs, taken = _creditor_references(words) if "RF" in text.upper() else ([], set())
    tokens: dict[str, None] = {}
    for n, word in enumerate(words):
        token = normalise_token(word) if n not in taken else ""
        if not token:
            continue
        tokens.setdefault(token, None)
        if "/" in token:
            for part in token.split("/"):
                if part := normalise_token(part):
                    tokens.setdefault(part, None)
    return References(tuple(dict.fromkeys(refs)), tuple(tokens))
