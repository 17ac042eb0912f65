"""Fail fast without a network, instead of waiting out a hub client's retries."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout` seconds."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" and "huggingface" in url:
        return False
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def cached_url(url: str) -> bool:
    """Whether torch.hub already holds the file of this weights URL."""
    import torch

    name = os.path.basename(urlparse(url).path)
    return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", name))


def offline_message(name: str, where: str) -> str:
    return (
        f"cannot download the pretrained weights of {name!r}: {where} is not reachable "
        f"(no network?). Pass local weights with --weights PATH (Python: weights=PATH), "
        f"use --strategy scratch for a random init, or try an offline model such as "
        f"pkg:efficientnet_lite0."
    )
