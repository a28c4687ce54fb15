"""The cyclic garbage collector paused while a statement file is read: building a 20,000-line
CAMT.053 tree makes some 600,000 objects, and each collection that runs meanwhile walks all of them
(half the parse's time on the statements bench). The tree holds no reference cycles (refcounting
frees it), so nothing is left for the collector to find; it runs again once the last parse ends
(parses in several threads at once share one pause)."""

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_state = {"depth": 0, "was_enabled": False}


@contextmanager
def collector_paused() -> Iterator[None]:
    with _LOCK:
        if _state["depth"] == 0:
            _state["was_enabled"] = gc.isenabled()
            gc.disable()
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0 and _state["was_enabled"]:
                gc.enable()
