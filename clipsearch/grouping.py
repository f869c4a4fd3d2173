"""Pairs of duplicates joined into groups (connected components): both modes of `clipsearch duplicates`."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .catalog import Catalog


def group_pairs(catalog: Catalog, pairs: list[dict], keep_first: Callable[[dict], Any]) -> list[dict]:
    """Pairs {id_a, id_b, distance} joined into groups (connected components), largest group first, each
    {"images": rows sorted by `keep_first`, "max_distance": its widest pair}."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        parent[root(p["id_a"])] = root(p["id_b"])
    members: dict[str, list[str]] = {}
    for image_id in parent:
        members.setdefault(root(image_id), []).append(image_id)
    if not members:
        return []
    rows = {r["id"]: r for r in catalog.query(
        "SELECT id, path, width, height, format, file_size FROM images WHERE id IN {ids:Array(String)}",
        {"ids": list(parent)})}
    widest: dict[str, float] = {}
    for p in pairs:
        group = root(p["id_a"])
        widest[group] = max(widest.get(group, p["distance"]), p["distance"])
    groups: list[dict[str, Any]] = [{"images": sorted((rows[i] for i in ids if i in rows), key=keep_first),
               "max_distance": round(widest[g], 6)} for g, ids in members.items()]
    groups = [g for g in groups if len(g["images"]) > 1]  # a row deleted meanwhile leaves no group of one
    return sorted(groups, key=lambda g: (-len(g["images"]), g["images"][0]["path"]))
