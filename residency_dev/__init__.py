"""Tools for a developer's machine, installed by no image (``deploy/Dockerfile`` copies this
package into none of them).

::

    __main__.py       ``python -m residency_dev token demo-keys|issue``
    token_issuer.py   the LOCAL DEMO user-token issuer: a key pair, its JWK set, signed tokens
    dynamodb_local.py starts and stops Amazon's DynamoDB Local for tests and the local stack

It may import ``residency_contract``; nothing deployable imports it.
"""
