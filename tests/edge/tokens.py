"""Real signed user tokens for tests: key pairs made here with ``cryptography``, their JWK set
written to a file the edge reads (``token_issuers``), tokens signed with PyJWT.

``TestIssuer`` holds one or more keys (``add_key`` / ``remove_key`` rewrite the JWK set file, as
an identity provider rotating keys would); ``mint`` signs claims shaped like VTEX ID's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from edge_router.config import IssuerSettings

ISS = "https://id.test.invalid"
AUD = "profile-system-test"


def new_key(alg: str) -> Any:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(alg)


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = RSAAlgorithm if alg == "RS256" else ECAlgorithm
    return {**algo.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": alg, "use": "sig"}


@dataclass
class TestIssuer:
    __test__ = False  # not a test class

    path: Path
    iss: str = ISS
    aud: str = AUD
    keys: dict[str, tuple[Any, str]] = field(default_factory=dict)  # kid -> (key, alg)

    def add_key(self, kid: str, alg: str = "RS256") -> None:
        self.keys[kid] = (new_key(alg), alg)
        self.write()

    def remove_key(self, kid: str) -> None:
        del self.keys[kid]
        self.write()

    def write(self) -> None:
        data = {"keys": [jwk(k, kid, alg) for kid, (k, alg) in self.keys.items()]}
        self.path.write_text(json.dumps(data))

    def settings(self, name: str = "test-idp", **over: Any) -> IssuerSettings:
        return IssuerSettings(
            name=name, issuer=self.iss, audiences=(self.aud,), jwks_file=str(self.path), **over
        )

    def claims(self, account_: str, user_id: str, email: str, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": email,
            "userId": user_id,
            "account": account_,
            "aud": self.aud,
            "iss": self.iss,
            "iat": now,
            "exp": now + 600,
            "jti": str(uuid.uuid4()),
        }
        claims.update(over)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, key_id: str, claims: dict[str, Any], **headers: Any) -> str:
        """Signed with the key ``key_id``; ``headers`` may override the JWS header (``kid``)."""
        key, alg = self.keys[key_id]
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": key_id, **headers})


def b64json(value: Any) -> str:
    """One segment of a hand-made JWS: ``value`` as JSON, base64url without padding."""
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def raw_get(port: int, target: str, header_lines: bytes, timeout: float = 10.0) -> bytes:
    """One GET sent as raw bytes (header values a client library would refuse to send, a
    ``\\xff`` say) with ``Connection: close``; the whole answer, read within ``timeout``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
            + header_lines
            + b"\r\n"
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def json_answer(raw: bytes) -> tuple[int, str, dict[str, Any]]:
    """(status, Content-Type, JSON body) of a whole answer read by ``raw_get``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = (line.partition(": ") for line in lines[1:])
    ctype = next((value for name, _, value in fields if name.lower() == "content-type"), "")
    return status, ctype, json.loads(body)
