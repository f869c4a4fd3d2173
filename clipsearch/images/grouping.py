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


SHARED_MOMENTS = 0.5   # two videos are copies when at least this share of the shorter one's moments match


def whole_videos(catalog: Catalog, pairs: list[dict]) -> list[dict]:
    """The pairs with videos compared whole: a video's moments are rows of their own, and two of one video, or
    a photo and a moment, are no copies of anything; two videos are a pair (each named by one of its moments)
    when at least SHARED_MOMENTS of the moments of the one with fewer match the other's (a shared title card
    or logo is not enough: black and one-colour frames are never moments at all)."""
    ids = list({i for p in pairs for i in (p["id_a"], p["id_b"])})
    video_of = {r["id"]: r["video"] for r in catalog.query(
        "SELECT id, video FROM images WHERE id IN {ids:Array(String)} AND video != ''", {"ids": ids})} if ids else {}
    if not video_of:
        return pairs
    moments = {r["video"]: int(r["n"]) for r in catalog.query(
        "SELECT video, count() AS n FROM images WHERE video IN {v:Array(String)} GROUP BY video",
        {"v": list(set(video_of.values()))})}
    named = {v: min(i for i, w in video_of.items() if w == v) for v in moments}
    out: list[dict] = []
    shared: dict[tuple[str, str], dict] = {}
    for p in pairs:
        a, b = video_of.get(p["id_a"]), video_of.get(p["id_b"])
        if a is None and b is None:
            out.append(p)
        elif a is not None and b is not None and a != b:
            key = (min(a, b), max(a, b))
            seen = shared.setdefault(key, {a: set(), b: set(), "distance": 0.0})
            seen[a].add(p["id_a"])
            seen[b].add(p["id_b"])
            seen["distance"] = max(seen["distance"], p["distance"])
    for (a, b), seen in shared.items():
        fewer = min((a, b), key=lambda v: moments[v])
        if len(seen[fewer]) >= SHARED_MOMENTS * moments[fewer]:
            out.append({"id_a": named[a], "id_b": named[b], "distance": seen["distance"]})
    return out


def group_pairs(catalog: Catalog, pairs: list[dict], keep_first: Callable[[dict], Any]) -> list[dict]:
    """Pairs {id_a, id_b, distance} joined into groups (connected components), largest group first, each
    {"images": rows sorted by `keep_first`, "max_distance": its widest pair}; videos compared whole
    (`whole_videos`), each shown by one of its moments' rows."""
    pairs = whole_videos(catalog, pairs)
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
