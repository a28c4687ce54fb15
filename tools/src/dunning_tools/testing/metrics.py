"""A service's `GET /metrics`, read the way tests assert on it."""


def samples(text: str) -> dict[str, float]:
    """Each sample of a Prometheus text exposition by its name and labels as written
    (`dunning_notifier_deliveries{state="sent"}`)."""
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    }
