"""Profile System rules, free of HTTP: the facade the handlers call.

Handlers parse a request into plain values and call one method of ``ProfileService``; it hands
the call to the entity family that owns it (``entities/``: profiles and versions, addresses,
purchase info, prospects, custom schema). Every family validates *everything* before the first
write (so bad input stores nothing), talks to DynamoDB only through ``Repository`` and to
documents only through the envelope codec, and returns ``Record``s; the read path and the write
path they share (and what they guarantee: one transaction per write, versions, bounded re-try
of a PATCH that lost a race, masking, the unmask audit, encryption, suppression) are described
and written once in ``entities/core.py``.
"""

from __future__ import annotations

from .crypto import DataKeyStore
from .entities.addresses import Addresses
from .entities.core import Core
from .entities.custom_schema import CustomSchemas
from .entities.profiles import Profiles
from .entities.prospects import Prospects
from .entities.purchase_info import PurchaseInfo
from .entities.values import Caller, Record, Reveal, parse_ttl
from .repository import Repository

__all__ = ["Caller", "ProfileService", "Record", "Reveal", "parse_ttl"]


class ProfileService:
    def __init__(
        self,
        repo: Repository,
        keys: DataKeyStore,
        *,
        update_retries: int,
        idempotency_ttl_s: int = 86400,
    ) -> None:
        self.schemas = CustomSchemas(repo)
        core = Core(
            repo,
            keys,
            self.schemas,
            update_retries=update_retries,
            idempotency_ttl_s=idempotency_ttl_s,
        )
        self.repo = repo
        self.keys = keys
        self.codec = core.codec
        self.profiles = Profiles(core, self.schemas)
        self.addresses = Addresses(core, self.profiles)
        self.purchase_info = PurchaseInfo(core, self.profiles)
        self.prospects = Prospects(core)

        # The handlers' names for the families' operations (same signatures, bound once).
        self.resolve = self.profiles.resolve
        self.create_profile = self.profiles.create
        self.get_profile = self.profiles.get
        self.get_profile_version = self.profiles.get_version
        self.update_profile = self.profiles.update
        self.delete_profile = self.profiles.delete
        self.create_address = self.addresses.create
        self.list_addresses = self.addresses.list_all
        self.get_address = self.addresses.get
        self.update_address = self.addresses.update
        self.delete_address = self.addresses.delete
        self.create_purchase_info = self.purchase_info.create
        self.get_purchase_info = self.purchase_info.get
        self.update_purchase_info = self.purchase_info.update
        self.delete_purchase_info = self.purchase_info.delete
        self.create_prospect = self.prospects.create
        self.list_prospects = self.prospects.list_all
        self.get_prospect = self.prospects.get
        self.update_prospect = self.prospects.update
        self.delete_prospect = self.prospects.delete
        self.full_schema = self.schemas.full_view
        self.custom_schema = self.schemas.custom_view
        self.put_custom_schema = self.schemas.replace
