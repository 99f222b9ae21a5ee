"""Whether the Hugging Face hub answers: asked before any download (a model, a data set, a metric's checkpoint)."""

from __future__ import annotations

import functools
import socket
from urllib.parse import urlparse

from huggingface_hub import constants


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers: False at once under HF_HUB_OFFLINE=1, else one TCP connect.

    Asked before any hub download, so an offline machine gets a clear message instead of minutes of
    retries. Remembered for the life of the process.
    """
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True
