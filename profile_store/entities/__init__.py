"""The Profile System's entity families, one module each, all of the same shape.

::

    profiles.py        profiles and their versions, found by id or an alternative key
    addresses.py       a profile's addresses and their versions
    purchase_info.py   a profile's purchase information and its versions
    prospects.py       prospects (subjects of their own, in one partition per account)
    custom_schema.py   the account's custom profile schema: its views, its replacement
    family.py          what a family tells the core: Family, Lookup, Place, Change, LostRace
    core.py            the one read path and the one write path, written once
    transaction.py     one write's entries, each with its role; what a failure answers
    values.py          the plain values and pure rules the families share

Each family says only what its entity is: where its items live, how a body is validated, what
a write adds to its transaction, how it is masked. How a read or a write happens is ``core``'s:
load → open → reveal-or-mask → audit, and validate → seal → one transaction (with the bounded
re-try of a PATCH that lost a race). ``domain.ProfileService`` is the facade the handlers call.
"""
