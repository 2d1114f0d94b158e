"""What the API reads from the Redis broker itself: whether it answers, and how many messages wait."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import redis
from kombu.transport.redis import Channel

# Celery's Redis priorities run 0-9; kombu keeps each priority step in its own list (the queue's
# name for step 0, name + separator + step for the others; Channel._q_for_pri). Counting every
# possible step holds whatever ``priority_steps`` the workers were configured with.
_PRIORITIES = range(10)


def masked_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, fit for logs and error bodies."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def client(url: str, timeout_s: float) -> redis.Redis:
    """A client that gives up after ``timeout_s`` when connecting or waiting for an answer."""
    return redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)


def ping(url: str, timeout_s: float) -> None:
    """Raise unless the broker answers PING within ``timeout_s``."""
    with client(url, timeout_s) as connection:
        connection.ping()


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps ``queue``'s waiting messages in, one per priority step."""
    return [queue if priority == 0 else f"{queue}{Channel.sep}{priority}" for priority in _PRIORITIES]


def queue_depths(url: str, timeout_s: float, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting (sent, not yet taken by a worker) in each queue."""
    queues = list(queues)
    with client(url, timeout_s) as connection:
        with connection.pipeline(transaction=False) as pipe:
            for queue in queues:
                for key in queue_keys(queue):
                    pipe.llen(key)
            lengths = pipe.execute()
    per_queue = len(_PRIORITIES)
    return {queue: sum(lengths[i * per_queue:(i + 1) * per_queue]) for i, queue in enumerate(queues)}
