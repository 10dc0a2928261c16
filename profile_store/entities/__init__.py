"""The Profile System's entity families, one module each, all of the same shape.

``profiles`` (profiles and their versions), ``addresses``, ``purchase_info``, ``prospects``
and ``custom_schema`` each say only what their entity is: where its items live (``Place``,
``Lookup``), how a body is validated, what a write adds to its transaction (``Change``), how
it is masked. How a read or a write happens is written once, in ``core``: load → open →
reveal-or-mask → audit, and validate → seal → one transaction (with the bounded re-try of a
PATCH that lost a race). ``values`` holds the plain values and pure rules they share.
``domain.ProfileService`` is the facade the handlers call.
"""
