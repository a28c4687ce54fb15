"""What text PostgreSQL can store: neither NUL characters nor lone surrogates (JSON can carry both).
One rule, for the HTTP edge guard (which names the field) and for the ingest validators (hot path)."""


def storable(value: str) -> bool:
    """True if PostgreSQL's text type takes `value` (cheap for the common, ASCII case)."""
    if "\x00" in value:
        return False
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate
            return False
    return True


def bad_text(value: str) -> str | None:
    """Why PostgreSQL cannot store this text, or None."""
    if storable(value):
        return None
    return "must not contain NUL characters" if "\x00" in value else "must not contain lone surrogates"
