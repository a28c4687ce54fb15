"""An SMS text's encoding and segments, as the networks count them, and its shortening to a cap.

GSM 03.38 (3GPP TS 23.038): a text made only of the 7-bit default alphabet's basic characters and its
extension table (each extension character is sent as ESC + character: two septets) goes as GSM-7:
160 septets in one message, 153 per segment once it needs several (the user data header takes 7).
Any other character makes the whole text UCS-2 (UTF-16): 70 code units alone, 67 per segment; a
character outside the BMP (an emoji) is two code units. A segment never splits an ESC pair or a
surrogate pair: the character moves whole to the next segment, so the count is exact, not a division.

Long reminders are cut to `max_segments` at a word boundary with an ellipsis that keeps the text in
its encoding: "..." for GSM-7 ("…" is not in the GSM alphabet and would turn the text into UCS-2),
"…" for UCS-2.
"""

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# The basic table (a position per character; ESC, 0x1B, is not a character of its own).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")  # two septets each (ESC + the character)
SINGLE = {"GSM-7": 160, "UCS-2": 70}  # what one message holds
PART = {"GSM-7": 153, "UCS-2": 67}  # what each segment of a concatenated message holds
ELLIPSIS = {"GSM-7": "...", "UCS-2": "…"}


@dataclass(frozen=True)
class SmsText:
    text: str
    encoding: Encoding
    segments: int
    truncated: bool = False


def encoding_of(text: str) -> Encoding:
    return "GSM-7" if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text) else "UCS-2"


def _widths(text: str, encoding: Encoding) -> list[int]:
    """Each character's size: septets for GSM-7, UTF-16 code units for UCS-2."""
    if encoding == "GSM-7":
        return [2 if c in GSM7_EXTENSION else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def segments_of(text: str, encoding: Encoding | None = None) -> int:
    """How many messages the text goes as (0 for an empty text)."""
    encoding = encoding or encoding_of(text)
    widths = _widths(text, encoding)
    if sum(widths) <= SINGLE[encoding]:
        return 1 if text else 0
    part, count, used = PART[encoding], 1, 0
    for width in widths:
        if used + width > part:  # a pair is never split: it starts the next segment
            count, used = count + 1, 0
        used += width
    return count


def measure(text: str) -> SmsText:
    encoding = encoding_of(text)
    return SmsText(text, encoding, segments_of(text, encoding))


def fit(text: str, max_segments: int) -> SmsText:
    """The text as sent: itself if it fits in `max_segments`, else cut at the last word boundary that
    leaves room for the ellipsis (mid-word only if a single word is too long), in its own encoding."""
    text = text.strip()
    whole = measure(text)
    if whole.segments <= max_segments:
        return whole
    encoding, ellipsis = whole.encoding, ELLIPSIS[whole.encoding]
    widths = _widths(text, encoding)
    # the longest prefix that surely fits, then back to a word boundary
    budget = (PART[encoding] if max_segments > 1 else SINGLE[encoding]) * max_segments - len(ellipsis) * 2
    end, used = 0, 0
    while end < len(text) and used + widths[end] <= budget:
        used += widths[end]
        end += 1
    while True:
        cut = text.rfind(" ", 0, end + 1)
        head = text[: cut if cut > 0 else end].rstrip()
        candidate = head + ellipsis
        if segments_of(candidate, encoding) <= max_segments or end == 0:
            return SmsText(candidate, encoding, segments_of(candidate, encoding), truncated=True)
        end = (cut if cut > 0 else end) - 1
