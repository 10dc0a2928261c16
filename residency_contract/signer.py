"""``X-Residency-Assertion`` on the edge's hot path: the bytes of ``assertion.sign``,
with the per-caller work done once.

``sign`` checks three fields against a regex, sorts and checks the roles and builds an HMAC
object on every call. For one caller (account, region, principal, roles) all of that is the
same on every request, so ``Signer`` validates it once and keeps the header's prefix in a
bounded dict; per request only the timestamp is appended and the MAC is a copy of a keyed
HMAC-SHA256 state (the key's pads are hashed once per region) fed the message.
``tests/edge/test_signer.py`` checks it against ``sign`` and ``verify``.
"""

from __future__ import annotations

import hmac
import time
from binascii import b2a_base64
from collections.abc import Collection, Mapping
from typing import Any

from .assertion import sign

_B64_URL = bytes.maketrans(b"+/", b"-_")  # base64 -> base64url


try:  # OpenSSL's HMAC object directly (what ``hmac.new`` wraps)
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # pragma: no cover - Python built without OpenSSL
    _hmac_new = hmac.new


def _hmac_base(key: bytes) -> Any:
    """A keyed HMAC-SHA256 state to ``copy()`` per message: the key's inner and outer pads
    are hashed once, not on every request."""
    return _hmac_new(key, digestmod="sha256")


_MAX_PREFIXES = 10_000


class Signer:
    __slots__ = ("_keys", "_macs", "_prefixes")

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = dict(keys)  # region -> assertion secret
        self._macs = {region: _hmac_base(key) for region, key in self._keys.items()}
        self._prefixes: dict[tuple[str, str, str, frozenset[str]], str] = {}

    def sign(
        self,
        *,
        account: str,
        region: str,
        principal: str,
        roles: Collection[str],
        method: str,
        target: str,
        now: int | None = None,
    ) -> str:
        key = self._keys[region]
        pkey = (account, region, principal, frozenset(roles))
        prefix = self._prefixes.get(pkey)
        if prefix is None:
            # The reference implementation validates the fields; keep its prefix.
            ref = sign(
                key,
                account=account,
                region=region,
                principal=principal,
                roles=pkey[3],
                method=method,
                target=target,
                now=0,
            )
            prefix = ref[: ref.rindex(";0;") + 1]
            if len(self._prefixes) >= _MAX_PREFIXES:
                self._prefixes.clear()
            self._prefixes[pkey] = prefix
        signed = f"{prefix}{int(time.time()) if now is None else now}"
        msg = f"{signed}\n{method.upper()}\n{target}".encode("utf-8", "surrogateescape")
        h = self._macs[region].copy()
        h.update(msg)
        # a SHA-256 MAC is 32 bytes: 43 base64 characters and one "=" of padding to drop
        mac = b2a_base64(h.digest(), newline=False)[:43].translate(_B64_URL).decode("ascii")
        return f"{signed};{mac}"
