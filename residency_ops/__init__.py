"""The operators' tools, apart from the edge they manage: ``residency-ops`` (its own console
script, its own image target; the edge image ships without it).

::

    __main__.py         ``residency-ops [--config FILE] COMMAND ...``: the entry point
    commands/           the command table, one module per command group, imported lazily:
                        ``registry ...``, ``account move|status|resume|abort``,
                        ``residency report``
    settings.py         the edge's settings as the tools read them (and the local stack's
                        dummy credentials for DynamoDB Local)
    registry_writer.py  ``RegistryWriter``: the edge's ``RegistryTable`` plus every write
                        (each with its change item), the account scan, the mover's job items
    report.py           proof of residency: every region's store table scanned by key
    move/               moving an account to another region, as a resumable job

It imports ``edge_router`` (settings, the registry's reader and records) and
``residency_contract``, never ``profile_store``; ``edge_router`` never imports it
(``tests/test_import_boundary.py``).
"""
