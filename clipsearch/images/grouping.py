"""Pairs of duplicates joined into groups (connected components): both modes of `clipsearch duplicates`."""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from clipsearch.store.catalog import Catalog


def components(pairs: Iterable[tuple[Hashable, Hashable]]) -> dict[Hashable, list]:
    """Pairs joined into groups (connected components, by union-find): a group's root -> its members."""
    parent: dict = {}

    def root(x: Hashable) -> Hashable:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[root(a)] = root(b)
    members: dict = {}
    for x in parent:
        members.setdefault(root(x), []).append(x)
    return members


def group_pairs(catalog: Catalog, pairs: list[dict], keep_first: Callable[[dict], Any]) -> list[dict]:
    """Pairs {id_a, id_b, distance} joined into groups (connected components), largest group first, each
    {"images": rows sorted by `keep_first`, "max_distance": its widest pair}."""
    members = components((p["id_a"], p["id_b"]) for p in pairs)
    if not members:
        return []
    group_of = {image_id: g for g, ids in members.items() for image_id in ids}
    rows = {r["id"]: r for r in catalog.query(
        "SELECT id, path, width, height, format, file_size FROM images WHERE id IN {ids:Array(String)}",
        {"ids": list(group_of)})}
    widest: dict = {}
    for p in pairs:
        group = group_of[p["id_a"]]
        widest[group] = max(widest.get(group, p["distance"]), p["distance"])
    groups: list[dict[str, Any]] = [{"images": sorted((rows[i] for i in ids if i in rows), key=keep_first),
               "max_distance": round(widest[g], 6)} for g, ids in members.items()]
    groups = [g for g in groups if len(g["images"]) > 1]  # a row deleted meanwhile leaves no group of one
    return sorted(groups, key=lambda g: (-len(g["images"]), g["images"][0]["path"]))
