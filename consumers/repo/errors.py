"""Domain errors of the repo step, split by what the consumer should do about them."""

from __future__ import annotations


class RepoHostError(Exception):
    """The git host refused the request (bad credentials, forbidden, invalid name).

    Retrying does not help; the handler turns it into a `RepoFailed` event carrying this
    message, which is the host's own explanation.
    """


class GitHostUnavailable(Exception):
    """The git host could not be reached or failed on its side (network, 5xx, rate limit).

    Retrying later may succeed; the handler raises it as a transient error so JetStream
    redelivers with backoff.
    """
