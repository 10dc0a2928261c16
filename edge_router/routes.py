"""Which API operation is this path? The route table, compiled once, and the path policy.

Two jobs, both pure and per request:

* ``check_path`` refuses targets that could mean something else to the store than to us
  (``..`` or ``.`` segments in any spelling, encoded slashes or backslashes, NULs: 400) and
  anything outside the two routed APIs (404). The raw target is what we check, because the raw
  target is what we forward.
* ``RouteTable.match`` names the operation template (``/api/.../profiles/{profileId}``) for
  metrics and logs. The label set is bounded by the table; anything else is ``other``. Logging
  the template, never the raw path, keeps e-mails and documents used as ids out of logs.
"""

from __future__ import annotations

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

_PARAM = object()  # key of the "any one segment" child in the trie


class RouteTable:
    """A segment trie: literal children first, then one ``{param}`` child; end marks a template."""

    __slots__ = ("_root",)

    def __init__(self, templates: Iterable[str] = (*TEMPLATES, *EXTENSION_TEMPLATES)) -> None:
        self._root: dict[object, dict] = {}
        for template in templates:
            node = self._root
            for seg in template.strip("/").split("/"):
                key: object = _PARAM if seg.startswith("{") and seg.endswith("}") else seg
                node = node.setdefault(key, {})
            node[None] = template  # type: ignore[assignment]

    def match(self, path: str) -> str:
        """Template for a path (without query), or ``other``."""
        segments = path.strip("/").split("/")
        # Fast path, no recursion: literal child first, else the param child. When it reaches
        # a template it is the one the depth-first walk below would find first.
        node = self._root
        for seg in segments:
            nxt = node.get(seg) if seg else None
            if nxt is None:
                nxt = node.get(_PARAM) if seg else None
                if nxt is None:
                    break
            node = nxt
        else:
            template = node.get(None)
            if template is not None:
                return template
        found = self._walk(self._root, segments, 0)
        return found if found is not None else OTHER

    def _walk(self, node: dict, segments: list[str], i: int) -> str | None:
        if i == len(segments):
            return node.get(None)
        seg = segments[i]
        if not seg:
            return None
        child = node.get(seg)
        if child is not None:
            found = self._walk(child, segments, i + 1)
            if found is not None:
                return found
        child = node.get(_PARAM)
        if child is not None:
            return self._walk(child, segments, i + 1)
        return None


_SUSPICIOUS = ("%", "/.", "\\")


def split_target(raw_target: str) -> str:
    """The path part of a raw request target (query cut off), after the policy checks."""
    if not raw_target.startswith("/") or raw_target.startswith("//"):
        raise BadRequest("invalid_path", "the request target must be an origin-form path")
    q = raw_target.find("?")
    path = raw_target if q == -1 else raw_target[:q]
    if "#" in path:
        raise BadRequest("invalid_path", "the request target must not carry a fragment")
    # Fast path: plain paths (the common case) cannot hide a dot segment.
    if "%" in path or "/." in path or "\\" in path:  # = any of _SUSPICIOUS, without a generator
        for seg in path.split("/"):
            low = seg.lower()
            if "\\" in low or "%2f" in low or "%5c" in low or "%00" in low:
                raise BadRequest("invalid_path", "encoded separators are not allowed in a path")
            if low.replace("%2e", ".") in {".", ".."}:
                raise BadRequest("invalid_path", "dot segments are not allowed in a path")
    if not path.startswith(ROUTED_PREFIXES):
        raise NotFound("not_found", "this edge serves only the profile-system and user-rights APIs")
    return path
