"""The contract between the two deployables: what the edge and a regional store must agree on.

``edge_router`` and ``profile_store`` ship as separate images and import only this package from
each other's world, never each other (``tests/test_import_boundary.py`` enforces it):

- ``assertion``: the signed ``X-Residency-Assertion`` (header names, roles, ``sign``/``verify``);
- ``signer``: the edge's keyed, cached signer producing exactly ``assertion.sign``'s bytes;
- ``settings``: the env + TOML settings reader with its casts, used by both processes;
- ``protocol``: names on the wire: header names, the error codes one side reacts to, the
  transfer endpoints' paths, the region-name pattern;
- ``tables``: the key layout of every table (registry and regional) and its key builders.

Nothing here does I/O at import or pulls in a store-only dependency (cryptography, jsonschema),
so the edge process loads only what it runs.
"""
