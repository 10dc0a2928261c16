"""``RouteTable`` (one regular expression) against the plain reading of the templates: walk
the segments depth first, a literal before a ``{param}`` at each step."""

from __future__ import annotations

import itertools
import random

from edge_router import api_paths

ALL = (*api_paths.TEMPLATES, *api_paths.EXTENSION_TEMPLATES)


def reference(path: str) -> str:
    segs = path.strip("/").split("/")

    def walk(candidates: list[list[str]], i: int) -> str | None:
        if i == len(segs):
            done = [c for c in candidates if len(c) == i]
            return "/" + "/".join(done[0]) if done else None
        seg = segs[i]
        if not seg:
            return None
        live = [c for c in candidates if len(c) > i]
        for literal in (True, False):
            nxt = [c for c in live if (c[i] == seg if literal else c[i].startswith("{"))]
            if nxt:
                found = walk(nxt, i + 1)
                if found is not None:
                    return found
        return None

    found = walk([t.strip("/").split("/") for t in ALL], 0)
    return found if found is not None else api_paths.OTHER


def test_every_template_and_tricky_ids_match_as_the_depth_first_reading() -> None:
    table = api_paths.RouteTable()
    words = ["p1", "unmask", "versions", "addresses", "schemas", "profileSystem", "custom", ""]
    rng = random.Random(7)
    paths = set()
    for t in ALL:
        segs = t.strip("/").split("/")
        params = [i for i, s in enumerate(segs) if s.startswith("{")]
        for combo in itertools.product(words, repeat=len(params)):
            filled = list(segs)
            for i, w in zip(params, combo, strict=True):
                filled[i] = w
            paths.add("/" + "/".join(filled))
        paths.add("/" + "/".join(segs[:-1]) + "/")  # trailing slash, one segment short
        paths.add(t + "/extra")
    paths.update("/api/storage/profile-system/" + rng.choice(words) for _ in range(20))
    assert len(paths) > 500
    mismatches = [
        (p, table.match(p), reference(p)) for p in paths if table.match(p) != reference(p)
    ]
    assert not mismatches, mismatches[:5]
    # and each template is reachable through its own shape
    assert {table.match(t.replace("{", "x").replace("}", "")) for t in ALL} == set(ALL)
