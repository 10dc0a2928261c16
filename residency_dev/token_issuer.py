"""``python -m residency_dev token ...``: the LOCAL DEMO user-token issuer (never a production
one; no image ships it).

``demo-keys --dir D`` makes a key pair for the local stack's demo issuer: the private key in
``D/demo-issuer-private.pem`` (mode 0600, never committed: the stack's work dir is a temporary
directory) and its public JWK set in ``D/demo-issuer.jwks.json``, the file the edge's
``[token_issuers."local-demo"]`` names. ``issue --account A --user U`` prints a token signed
with that key, shaped like VTEX ID's (``sub`` the e-mail, ``userId``, ``account``, ``aud``,
``iss``, ``exp``, ``jti``). The key is ``--key``, else ``$EDGE_DEMO_ISSUER_KEY``, else
``demo-issuer-private.pem`` beside ``$EDGE_CONFIG`` (where the local stack writes both).

A real identity provider is plugged in with its own JWKS URL (README, "User tokens"); this
command has no part in it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

DEMO_ISSUER = "https://id.local-demo.invalid"
DEMO_AUDIENCE = "profile-system-local-demo"
KEY_FILE = "demo-issuer-private.pem"
JWKS_FILE = "demo-issuer.jwks.json"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="token_command", required=True)
    p = sub.add_parser("demo-keys", help="LOCAL DEMO: make the demo issuer's key pair and JWKS")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--alg", choices=["ES256", "RS256"], default="ES256")
    p = sub.add_parser("issue", help="LOCAL DEMO: print a user token signed by the demo issuer")
    p.add_argument("--account", required=True)
    p.add_argument("--user", required=True, help="the user id (userId claim), e.g. a UUID")
    p.add_argument("--email", default=None, help="the sub claim (default: made from --user)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default 3600)")
    p.add_argument("--key", type=Path, default=None, help="the demo issuer's private key")
    p.add_argument("--issuer", default=DEMO_ISSUER)
    p.add_argument("--audience", default=DEMO_AUDIENCE)


def kid_of(key: PrivateKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    public = key.public_key() if hasattr(key, "private_bytes") else key
    der = public.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "local-demo-" + hashlib.sha256(der).hexdigest()[:12]


def algorithm_of(key: PrivateKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid_of(key), "alg": algorithm_of(key), "use": "sig"}


def make_demo_keys(directory: Path, alg: str = "ES256") -> tuple[Path, Path]:
    key: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path, jwks_path = directory / KEY_FILE, directory / JWKS_FILE
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    jwks_path.write_text(json.dumps({"keys": [public_jwk(key)]}, indent=2) + "\n")
    return key_path, jwks_path


def load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an RSA or EC private key")
    return key


def issue(
    key: PrivateKey,
    *,
    account: str,
    user: str,
    email: str | None = None,
    ttl_s: int = 3600,
    issuer: str = DEMO_ISSUER,
    audience: str = DEMO_AUDIENCE,
) -> str:
    now = int(time.time())
    claims = {
        "sub": email or f"{user}@users.local-demo.invalid",
        "userId": user,
        "account": account,
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "exp": now + ttl_s,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm=algorithm_of(key), headers={"kid": kid_of(key)})


def _key_path(given: Path | None) -> Path:
    if given is not None:
        return given
    if os.environ.get("EDGE_DEMO_ISSUER_KEY"):
        return Path(os.environ["EDGE_DEMO_ISSUER_KEY"])
    if os.environ.get("EDGE_CONFIG"):
        return Path(os.environ["EDGE_CONFIG"]).parent / KEY_FILE
    raise ValueError("no demo key: pass --key, or set EDGE_DEMO_ISSUER_KEY or EDGE_CONFIG")


def run(args: argparse.Namespace) -> int:
    try:
        if args.token_command == "demo-keys":  # noqa: S105 (a command name)
            key_path, jwks_path = make_demo_keys(args.dir, args.alg)
            out = {"key_file": str(key_path), "jwks_file": str(jwks_path)}
            print(json.dumps({**out, "issuer": DEMO_ISSUER, "audience": DEMO_AUDIENCE}))
            return 0
        if args.ttl < 1:
            raise ValueError("--ttl must be >= 1")
        key = load_key(_key_path(args.key))
        print(
            issue(
                key,
                account=args.account,
                user=args.user,
                email=args.email,
                ttl_s=args.ttl,
                issuer=args.issuer,
                audience=args.audience,
            )
        )
        return 0
    except (OSError, ValueError) as exc:
        print(f"residency-dev token: {exc}", file=sys.stderr)
        return 1
