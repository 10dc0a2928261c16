"""The public API's paths: which operation a path is (the table, compiled once) and which raw
targets the edge refuses. Not to be confused with ``routing`` (which region and instance).

Two jobs, both pure and per request (``pipeline.check_path`` runs both):

* ``split_target`` refuses targets that could mean something else to the store than to us
  (``..`` or ``.`` segments in any spelling, encoded slashes or backslashes, NULs: 400) and
  anything outside the two routed APIs (404). The raw target is what we check, because the raw
  target is what we forward.
* ``RouteTable.match`` names the operation template (``/api/.../profiles/{profileId}``) for
  metrics and logs. The label set is bounded by the table; anything else is ``other``. Logging
  the template, never the raw path, keeps e-mails and documents used as ids out of logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import BadRequest, NotFound

ROUTED_PREFIXES = ("/api/storage/profile-system/", "/api/user-rights/")
OTHER = "other"

# The operations of the two public specs the edge fronts (vtex-profile-system.openapi.json,
# vtex-data-subject-rights.openapi.json). tests/edge checks this list against the spec files.
TEMPLATES = (
    "/api/storage/profile-system/profiles",
    "/api/storage/profile-system/profiles/{profileId}",
    "/api/storage/profile-system/profiles/{profileId}/unmask",
    "/api/storage/profile-system/profiles/{profileId}/versions/{profileVersionId}",
    "/api/storage/profile-system/profiles/{profileId}/versions/{profileVersionId}/unmask",
    "/api/storage/profile-system/profiles/{profileId}/addresses",
    "/api/storage/profile-system/profiles/{profileId}/addresses/unmask",
    "/api/storage/profile-system/profiles/{profileId}/addresses/{addressId}",
    "/api/storage/profile-system/profiles/{profileId}/addresses/{addressId}/unmask",
    "/api/storage/profile-system/profiles/{profileId}/addresses/{addressId}/versions/{addressVersionId}",
    "/api/storage/profile-system/profiles/{profileId}/addresses/{addressId}/versions/{addressVersionId}/unmask",
    "/api/storage/profile-system/prospects",
    "/api/storage/profile-system/prospects/unmask",
    "/api/storage/profile-system/prospects/{prospectId}",
    "/api/storage/profile-system/prospects/{prospectId}/unmask",
    "/api/storage/profile-system/profiles/{profileId}/purchase-info",
    "/api/storage/profile-system/profiles/{profileId}/purchase-info/unmask",
    "/api/storage/profile-system/schemas/profileSystem",
    "/api/storage/profile-system/schemas/profileSystem/custom",
    "/api/user-rights/createAndProcessDeleteUserData",
)
# Our own operations under the routed prefixes, not in the public specs: the status of an
# erasure request (the store answers it in the account's home region like the erasure itself).
EXTENSION_TEMPLATES = ("/api/user-rights/requests/{requestId}",)


class RouteTable:
    """The templates as one anchored regular expression: a literal segment matches itself, a
    ``{param}`` any one non-empty segment. Where a path fits several templates the one with a
    literal at the first position they differ wins (``/prospects/unmask`` is that operation,
    not ``/prospects/{prospectId}``): the alternatives are ordered that way, and the regex
    engine takes the first that matches the whole path."""

    __slots__ = ("_regex", "_templates")

    def __init__(self, templates: Iterable[str] = (*TEMPLATES, *EXTENSION_TEMPLATES)) -> None:
        def segments(template: str) -> list[str]:
            return template.strip("/").split("/")

        def is_param(seg: str) -> bool:
            return seg.startswith("{") and seg.endswith("}")

        ordered = sorted(
            set(templates), key=lambda t: [(is_param(seg), seg) for seg in segments(t)]
        )
        self._templates = tuple(ordered)
        alternatives = (
            "("
            + "/".join("[^/]+" if is_param(seg) else re.escape(seg) for seg in segments(t))
            + ")"
            for t in ordered
        )
        self._regex = re.compile("|".join(alternatives))

    def match(self, path: str) -> str:
        """Template for a path (without query), or ``other``."""
        m = self._regex.fullmatch(path.strip("/"))
        return OTHER if m is None else self._templates[m.lastindex - 1]  # type: ignore[operator]


def split_target(raw_target: str) -> str:
    """The path part of a raw request target (query cut off), after the policy checks."""
    if not raw_target.startswith("/") or raw_target.startswith("//"):
        raise BadRequest("invalid_path", "the request target must be an origin-form path")
    if "#" in raw_target:  # in the query too: a request target has no fragment (RFC 9112 §3.2)
        raise BadRequest("invalid_path", "the request target must not carry a fragment")
    q = raw_target.find("?")
    path = raw_target if q == -1 else raw_target[:q]
    # Fast path: plain paths (the common case) cannot hide a dot segment.
    if "%" in path or "/." in path or "\\" in path:
        for seg in path.split("/"):
            low = seg.lower()
            if "\\" in low or "%2f" in low or "%5c" in low or "%00" in low:
                raise BadRequest("invalid_path", "encoded separators are not allowed in a path")
            if low.replace("%2e", ".") in {".", ".."}:
                raise BadRequest("invalid_path", "dot segments are not allowed in a path")
    if not path.startswith(ROUTED_PREFIXES):
        raise NotFound("not_found", "this edge serves only the profile-system and user-rights APIs")
    return path
