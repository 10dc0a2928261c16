"""The regional Profile System store: one region's PII profiles on DynamoDB, behind the edge.

The request path, each layer importing only the ones below it::

    handlers.py         HTTP of the spec's operations: parse, call one service method, answer
    rights_handlers.py  HTTP of erasure, its status and the audit listing
    domain.py           ProfileService, the facade the handlers call
    entities/           the rules: one module per entity family over one read and one write path
    repository.py       all DynamoDB I/O: counted calls, fenced and token-retried writes
    layout.py           every key form of the table, the attribute-value helpers (pure)

Beside it::

    app.py              the aiohttp application: middlewares, typed app keys, the AWS clients
    auth.py             the edge's assertion verified, the operation's role required
    config.py           StoreSettings, read and checked once at start
    errors.py           the one exception tree (drawn there), turned into JSON in app.py
    idempotency.py      each write's DynamoDB token, a create's Idempotency-Key record
    fence.py            the marker that stops serving an account that is moving or moved
    crypto.py           per-subject envelope encryption, erasure by crypto-shredding
    key_providers.py    the data keys' wrapping: a local master key (dev) or KMS
    altkeys.py          emails and documents as alternative keys: normalised, salted, hashed
    masking.py          what a masked read shows (pure)
    schema.py           the profile schema and an account's custom fields (pure)
    contract.py         request bodies checked against the spec's own schemas
    audit.py            the audit trail of unmasks and erasures
    erasure.py          erasure of a data subject, and the suppression after it
    metrics.py          the instance's Prometheus metrics
    provisioning.py     the table's creation, the start-time PITR check
    pitr.py             point-in-time recovery: show, enable, restore
    transfer/           the store's side of an account move, behind its own door
    __main__.py         the one CLI: serve, create-table, generate-local-key, audit, suppression,
                        pitr
    dynamodb_local.py   DynamoDB Local for tests and the local stack (dev only)

The edge never imports this package, nor this package the edge: both import
``residency_contract``, which holds every string they must agree on.
"""
