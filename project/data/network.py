"""Downloads (ImageNet weights, keras.datasets) go through urllib with no timeout, so a network
that silently drops packets would hang a run for ever. This bounds every socket opened meanwhile."""

import socket
from contextlib import contextmanager


@contextmanager
def download_timeout(seconds=60):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
