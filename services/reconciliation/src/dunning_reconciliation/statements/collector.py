"""The cyclic garbage collector paused while a statement file is read and while each chunk of its
lines is imported: building a 20,000-line CAMT.053 tree makes some 600,000 objects, a chunk some
10^5 more, and each collection that runs meanwhile walks all of them (on the statements bench, half
the parse's time and a third of the whole import's). The tree and the lines hold no reference
cycles (refcounting frees them); the cycles others make meanwhile wait a few seconds at most. The
collector runs again once the last pause ends (pauses in several threads or tasks at once share
one)."""

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
