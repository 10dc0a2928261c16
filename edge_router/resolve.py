"""Which account is this request for? Pure: a Host header and the ``an`` query values in, an
account name out, or a ``BadRequest`` naming why not (a Host that is not a host at all too).

VTEX addresses an account either by host (``{account}.vtexcommercestable.com.br``) or by the
``an`` query parameter (``api.vtex.com/...?an={account}``). When both are given they must
agree: a request that names two accounts is ambiguous and is refused rather than guessed.
Suffixes are normalised once at start; nothing here compiles or allocates more than it must.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import BadRequest

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# What a Host may be (RFC 9112 §3.2, RFC 3986 §3.2.2): uri-host [":" port]. Anything else
# (spaces, userinfo, a path, non-ASCII) is a 400, never an account lookup nor forwarded.
_HOST = re.compile(
    r"(?:\[[0-9A-Za-z:._~!$&'()*+,;=-]+\]|[0-9A-Za-z._~%!$&'()*+,;=-]*)(?::[0-9]*)?", re.ASCII
)


def valid_account(name: str) -> bool:
    return ACCOUNT_NAME.match(name) is not None


_MAX_HOSTS = 10_000
_MAX_HOST_LEN = 300  # a DNS name (253) and a port; longer Host values are not kept


class AccountResolver:
    __slots__ = ("_hosts", "_suffixes")

    def __init__(self, suffixes: Sequence[str]) -> None:
        # (".suffix", len) pairs, longest first: the most specific suffix wins.
        ordered = sorted({s.lower().strip(".") for s in suffixes}, key=len, reverse=True)
        self._suffixes = tuple(("." + s, len(s) + 1) for s in ordered)
        # Host header -> account label (or "" for none): a pure function of the header, so
        # the answers are kept (bounded); refusals are not cached, they raise every time.
        self._hosts: dict[str, str] = {}

    def from_host(self, host: str | None) -> str | None:
        """The account label of a configured host suffix, or None when the host names none."""
        if not host:
            return None
        found = self._hosts.get(host)
        if found is None:
            found = self._from_host(host) or ""
            if len(host) <= _MAX_HOST_LEN:
                if len(self._hosts) >= _MAX_HOSTS:
                    self._hosts.clear()
                self._hosts[host] = found
        return found or None

    def _from_host(self, host: str) -> str | None:
        if _HOST.fullmatch(host) is None:
            raise BadRequest("invalid_host", "the Host header is not a valid host")
        host = host.lower()
        if host.startswith("["):  # IPv6 literal: never an account
            return None
        colon = host.rfind(":")
        if colon != -1:
            host = host[:colon]
        if host.endswith("."):
            host = host[:-1]
        for dotted, n in self._suffixes:
            if len(host) > n and host.endswith(dotted):
                label = host[:-n]
                if not valid_account(label):
                    raise BadRequest("invalid_account", "the host does not name a valid account")
                return label
        return None

    def resolve(self, host: str | None, an_values: Sequence[str]) -> str:
        from_host = self.from_host(host)
        from_query: str | None = None
        if an_values:
            from_query = an_values[0]
            if any(v != from_query for v in an_values[1:]):
                raise BadRequest("ambiguous_account", "the an parameter is given twice")
            if not valid_account(from_query):
                raise BadRequest("invalid_account", "the an parameter is not a valid account")
        if from_host is not None and from_query is not None and from_host != from_query:
            raise BadRequest("ambiguous_account", "host and an parameter name different accounts")
        account = from_host or from_query
        if account is None:
            raise BadRequest(
                "missing_account", "name the account in the host or the an query parameter"
            )
        return account
