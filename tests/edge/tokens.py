"""Real signed user tokens for tests: key pairs made here with ``cryptography``, their JWK set
written to a file the edge reads (``token_issuers``), tokens signed with PyJWT.

``TestIssuer`` holds one or more keys (``add_key`` / ``remove_key`` rewrite the JWK set file, as
an identity provider rotating keys would); ``mint`` signs claims shaped like VTEX ID's.
"""

from __future__ import annotations

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
