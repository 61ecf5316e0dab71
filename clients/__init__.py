"""The client side of spikeshot: the ``spikeshot-client`` command and the code that streams event
files, folders and live cameras to a spikeshot server.

Importing this package never imports torch: a robot's client needs only numpy, grpcio, protobuf,
lz4 and zstandard (AEDAT4's packets).
"""

from spikeshot.clients.aio import AsyncClient, AsyncSession
from spikeshot.clients.client import Client, Session
from spikeshot.clients.errors import ServerError, ServerUnavailable, SourceError

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "Client",
    "ServerError",
    "ServerUnavailable",
    "Session",
    "SourceError",
]
