"""results.json -> results.md and the search plot (search.png)."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from clipsearch.service import shapes


def machine() -> str:
    import torch
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {'GPU' if torch.cuda.is_available() else 'no GPU'}"


def write(results: dict, out: Path, plot: bool) -> str:
    """results.json and results.md in `out` (and search.png with `plot`); returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = to_markdown(results)
    (out / "results.md").write_text(markdown)
    if plot and any(run.get("engines") for run in results.get("search", [])):
        plot_search(results["search"], out / "search.png")
    return markdown


PEERS = ("numpy brute", "numpy gather", "DuckDB SQL", "faiss flat", "faiss HNSW")


def _cell(case: dict) -> str:
    """p50 ms, with recall@10 and the share of searches with k rows where they are short of perfect."""
    notes = [f"recall {case['recall_at_10']}"] if case["recall_at_10"] < 1 else []
    notes += [f"k rows {case['k_rows_share']:.0%}"] if case["k_rows_share"] < 1 else []
    return f"{case['sql_p50_ms']}" + (f" ({', '.join(notes)})" if notes else "")


def search_lines(run: dict) -> list[str]:
    engines, notes = run["engines"], run["notes"]
    ours = ["clipsearch", "clipsearch: rank() alone", "clipsearch (no filter columns)",
            "clipsearch exact scan (no index)"]
    ours = [e for e in ours if e in engines]
    peers = [p for p in PEERS if p in engines]
    lines = ["", f"Search over {run['rows']:,} x {run['dim']} vectors, {run['queries']} queries, k={run['k']}, p50 ms "
                 "(recall@10 against exact where below 1; clipsearch's time is all of `Searcher.search` but "
                 "encoding the query). Strategy clipsearch ran in brackets.", "",
             "| filter | " + " | ".join(ours + peers) + " | best peer (recall >= 0.95, k rows) "
             "| clipsearch / best peer |",
             "|---" * (len(ours) + len(peers) + 3) + "|"]
    for filt in engines["clipsearch"]:
        good = [p for p in peers if engines[p][filt]["recall_at_10"] >= 0.95 and engines[p][filt]["k_rows_share"] == 1]
        best = min(good, key=lambda p: engines[p][filt]["sql_p50_ms"]) if good else None
        ratio = (f"{engines['clipsearch'][filt]['sql_p50_ms'] / max(0.01, engines[best][filt]['sql_p50_ms']):.1f}x"
                 if best else "-")
        cells = []
        for name in ours:
            cell = _cell(engines[name][filt])
            if "ran" in engines[name][filt]:
                cell += f" [{engines[name][filt]['ran']}]"
            cells.append(cell)
        lines.append(f"| {filt} | " + " | ".join(cells + [_cell(engines[p][filt]) for p in peers])
                     + f" | {best or '-'} | {ratio} |")
    lines += ["", f"Insert {notes['insert_rows_per_s']:,} rows/s; HNSW ({notes['hnsw']}) build and tuning "
                  f"{notes['hnsw_build_and_tune_s']} s, tuned search beam {notes['tuned']['beam']} (recall@10 "
                  f"{notes['tuned']['recall']} on {notes['tuned']['queries']} sample queries"
                  + (f"; images: beam {notes['tuned']['image_beam']}, recall {notes['tuned']['image_recall']}"
                     if "image_beam" in notes["tuned"] else "") + "); filter columns "
                  f"sel_1, sel_0_1 built in {notes['filter_columns_build_s']} s; faiss HNSW ({notes['faiss_hnsw']}) "
                  f"build {notes['peers_build_s'].get('faiss HNSW', '-')} s."
                  + (f" Not installed, skipped: {', '.join(notes['peers_missing'])}."
                     if notes["peers_missing"] else "")]
    if run.get("levers"):
        filters = list(next(iter(run["levers"].values())))
        lines += ["", "Each lever off in turn: the ranking SQL (`Searcher.rank`), p50 ms, recall@10 where below 1, "
                      "[strategies that ran]; numpy brute force in the same rounds:", "",
                  "| ranking SQL | " + " | ".join(filters) + " |", "|---" * (len(filters) + 1) + "|"]
        for name, cases in run["levers"].items():
            cells = [(f"{c['sql_p50_ms']}" + (f" (recall {c['recall_at_10']})" if c["recall_at_10"] < 1 else "")
                      + f" [{c['ran']}]") for c in cases.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if run.get("index_costs"):
        lines += ["", "Where an index search's time goes (p50 ms, unfiltered, k=10):", "",
                  "| query | ms |", "|---|---|"] + [f"| {k} | {v} |" for k, v in run["index_costs"].items()]
    if run.get("scan"):
        lines += ["", "Where an exact scan's time goes (p50 ms, same table, before the index):", "",
                  "| step | ms |", "|---|---|"] + [f"| {k} | {v} |" for k, v in run["scan"].items()]
    return lines


def to_markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']}; {results['date']}"]
    if results.get("loader"):
        lines += ["", "| model | images | raw encode (img/s) | decode + preprocess, 1 process (img/s) "
                      "| loader (img/s) | loader / raw |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['images']} | {r['raw_encode_images_per_s']} | "
                  f"{r['decode_one_process_images_per_s']} | {r['loader_images_per_s']} | {r['loader_vs_raw']:.0%} |"
                  for r in results["loader"]]
    if results.get("videos"):
        v = results["videos"]
        lines += ["", "| videos (H.264, 30 fps) | seconds of video | frames | PyAV decode only, 1 process (frames/s, "
                      "video s/s) | loader (moments/s, frames/s, video s/s) | loader / decode only |",
                  "|---|---|---|---|---|---|",
                  f"| {v['videos']} x {v['resolution']} | {v['video_seconds']} | {v['frames']} | "
                  f"{v['decode_only_frames_per_s']}, {v['decode_only_video_s_per_s']} | {v['loader_moments_per_s']}, "
                  f"{v['loader_frames_per_s']}, {v['loader_video_s_per_s']} | {v['loader_vs_decode_only']:.0%} |"]
    if results.get("reembed"):
        lines += ["", "`clipsearch reembed` from the bundled model (files read back, decoded in workers, encoded, "
                      "inserted into `embeddings`; then the switch):", "",
                  "| to model | images | raw encode (img/s) | re-embedding (img/s) | re-embedding / raw | switch (s) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['images']} | {r['raw_encode_images_per_s']} | {r['reembed_images_per_s']} "
                  f"| {r['reembed_vs_raw']:.0%} | {r['switch_s']} |" for r in results["reembed"]]
    for run in (r for r in results.get("search", []) if "engines" in r):  # older runs had another shape
        lines += search_lines(run)
    if results.get("quantization"):
        lines += quantization_lines(results["quantization"])
    if results.get("memory"):
        mem = results["memory"]
        lines += ["", f"Peak resident memory with {mem['rows']:,} rows: `clipsearch serve` {mem['serve_mib']} MiB "
                      f"after {mem['searches']} searches; `clipsearch load` of {mem['loaded']} images "
                      f"{mem['load_mib']} MiB (the vectors alone would be {mem['vectors_mib']} MiB). Of that, Python "
                      f"objects peak at {mem.get('serve_python_peak_mib', '-')} MiB for the searches and "
                      f"{mem.get('load_python_peak_mib', '-')} MiB for a load (tracemalloc); the rest is the "
                      "ClickHouse engine running inside the process."]
    if results.get("duplicates"):
        lines += ["", "| near-duplicate scan: rows x dim | threshold | LSH bits x tables | SQL (s) | planted pairs "
                  "found | numpy all-pairs (s) | recall vs all pairs |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {d['rows']} x {d['dim']} | {d['threshold']} | {d['bits_tables'][0]} x {d['bits_tables'][1]} | "
                  f"{d['sql_s']} | {d['planted_found']} / {d['planted_pairs']} | {d.get('numpy_all_pairs_s', '-')} | "
                  f"{d.get('recall', '-')} |" for d in results["duplicates"]]
    if results.get("bundled_copies"):
        b = results["bundled_copies"]
        lines += ["", f"Bundled model, {b['images']} generated images and a copy of each: distance to the nearest "
                      f"distinct image min {b['distinct_nearest_min']}, 5th percentile {b['distinct_nearest_p5']}, "
                      f"median {b['distinct_nearest_median']}; distance a copy moves (median / p95 / max): "
                      + "; ".join(f"{k} {b[k]['median']} / {b[k]['p95']} / {b[k]['max']}"
                                  for k in shapes.NEAR_COPY_KINDS) + "."]
    if results.get("copies"):
        lines += copies_lines(results["copies"])
    runs = results.get("service_runs") or ([results["service"]] if results.get("service") else [])
    if runs:
        v = runs[0]
        lines += ["", f"| `clipsearch serve`, {v['clients']} clients x {v['searches'] // v['clients']} searches | "
                  "searches/s | p50 (ms) | p95 (ms) | errors | same searches in-process (searches/s, ms each) |",
                  "|---|---|---|---|---|---|"]
        for v in runs:
            images = v.get("images") or results.get("loader", [{}])[0].get("images", "?")  # older runs: the loader's
            lines.append(f"| {images:,} images, k=10 | {v['http_searches_per_s']} | {v['http_p50_ms']} | "
                         f"{v['http_p95_ms']} | {v['errors']} | {v['in_process_searches_per_s']}, "
                         f"{v['in_process_ms_per_search']} |")
    if results.get("served"):
        s = results["served"]
        lines += ["", f"One served folder, everyone at once ({s['base_images']:,} images, then {s['loaded']:,} more "
                      f"loaded by `clipsearch load` through the running service in {s['load_s']} s, "
                      f"{s['load_images_per_s']} images/s):", "",
                  "| searches over HTTP, k=10 | p50 (ms) | p95 (ms) | p50 / idle |", "|---|---|---|---|",
                  f"| idle | {s['idle_p50_ms']} | {s['idle_p95_ms']} | 1 |",
                  f"| during the load ({s['searches_during_load']} searches) | {s['during_load_p50_ms']} | "
                  f"{s['during_load_p95_ms']} | {s['load_ratio_p50']} |",
                  f"| while an analyst scans every vector (a scan: {s['analyst_scan_p50_ms']} ms) | "
                  f"{s['during_scan_p50_ms']} | {s['during_scan_p95_ms']} | {s['scan_ratio_p50']} |"]
    if results.get("analysts"):
        a = results["analysts"]
        lines += ["", f"Analysts at once on a served folder ({a['images']:,} images): {a['burst']} analyst queries of "
                      f"{a['burst_query_s']} s each sent at once on the ClickHouse HTTP port, from one session (ran "
                      f"{a['one_session_ran']}, refused at once {a['one_session_refused']}) and from {a['burst']} "
                      f"sessions (ran {a['many_sessions_ran']}, refused {a['many_sessions_refused']}); meanwhile "
                      "the wait of other requests:", "",
                  "| request | idle p50 (ms) | one session's burst: p50 / max (ms) | 20 sessions': p50 / max (ms) |",
                  "|---|---|---|---|"]
        def cell(case: str, name: str) -> str:
            refused = a.get(f"{case}_analyst_refused", 0) if name == "analyst" else 0
            if a.get(f"{case}_{name}_max_ms") is None:
                return f"refused ({refused} of 5: the queue was full)"
            return f"{a[f'{case}_{name}_p50_ms']} / {a[f'{case}_{name}_max_ms']}" + \
                (f" ({refused} of 5 refused)" if refused else "")
        for name, label in (("cli", "the CLI's query (`clipsearch` login)"), ("analyst", "a second analyst's query"),
                            ("page", "a page search")):
            lines.append(f"| {label} | {a[f'idle_{name}_p50_ms']} | {cell('one_session', name)} | "
                         f"{cell('many_sessions', name)} |")
    if results.get("ocr"):
        lines += ocr_lines(results["ocr"])
    if results.get("words"):
        from bench.words import lines as words_lines  # the section's own table
        lines += words_lines(results["words"])
    if results.get("throughput"):
        from bench.throughput import lines as throughput_lines
        lines += throughput_lines(results["throughput"])
    return "\n".join(lines) + "\n"


def ocr_lines(o: dict) -> list[str]:
    lines = ["", f"OCR ({o['engine']}, one thread): {o['words_found']:.0%} of the words drawn into {o['images']} "
                 f"generated pictures found; {o['seconds_per_image_p50']} s per image (p50), at most "
                 f"{o['seconds_per_image_max']} s.", "", "| words found by | |", "|---|---|"]
    return lines + [f"| {kind} | " + ", ".join(f"{value} {share:.0%}" for value, share in shares.items()) + " |"
                    for kind, shares in o["by"].items()]


CHANGES = {"reencode": "re-encoded (JPEG quality 50-95)", "resize": "resized to 50-90%",
           "crop": "cropped (0-10% off each side)", "format": "format changed (PNG <-> JPEG)",
           "brightness": "brightness changed (5-15%)", "border": "2-10 pixel border added"}


def quantization_lines(q: dict) -> list[str]:
    lines = ["", f"The HNSW index's quantization on {q['rows']:,} x {q['dim']} (the search benchmark's table and "
                 f"{q['queries']} queries, unfiltered, k=10, clipsearch's ranking SQL; i8 and b1 re-ranked by the "
                 "Float32 vectors):", "",
             "| quantization | build (s) | search beam | p50 (ms) | recall@10 | largest score error |",
             "|---|---|---|---|---|---|"]
    rescored = {r["quantization"] for r in q["runs"] if r["rescored"]}
    how = {True: " (re-ranked)", False: " (index distances only)"}
    lines += [f"| {r['quantization']}{how[r['rescored']] if r['quantization'] in rescored else ''} | "
              f"{r['build_s']} | {r['beam']} | "
              f"{r['sql_p50_ms']} | {r['recall_at_10']} | {r['max_score_error']} |" for r in q["runs"]]
    return lines


def _recall_table(rows: dict, first: str) -> list[str]:
    """One row per entry of `rows` ({label: {"recall": {kind: r}, "lookalike_precision", "pair_precision",
    "originals_merged"}}), a column per kind of change."""
    kinds = list(next(iter(rows.values()))["recall"])
    return [f"| {first} | " + " | ".join(kinds) + " | look-alike precision | pair precision | originals merged |",
            "|---" * (len(kinds) + 4) + "|"] + [
        f"| {label} | " + " | ".join(str(r["recall"][k]) for k in kinds) + f" | {r['lookalike_precision']} | "
        f"{r['pair_precision']} | {r['originals_merged']} |" for label, r in rows.items()]


def copies_lines(c: dict) -> list[str]:
    q, h, s, demo = c["quality"], c["hashing"], c.get("scale"), c.get("demo_catalogue")
    layout = f", colour layout within {q['chroma_distance']} bits" if "chroma_distance" in q else ""
    lines = ["", f"Copies by perceptual hash (`clipsearch duplicates`, threshold {q['threshold']} bits, colour within "
                 f"{q['colour_distance']} steps{layout}): {q['originals']:,} generated originals (200-640 px), a "
                 f"look-alike of each (another picture of the same colour and shape) and one copy per change, "
                 f"{q['images']:,} images:", "",
             "| change | recall (grouped with the original) | pair precision |", "|---|---|---|"]
    lines += [f"| {CHANGES.get(k, k)} | {r} | {q['pair_precision_per_kind'][k]} |" for k, r in q["recall"].items()]
    borders = ("; borders by width: " + ", ".join(f"{k}: {v}" for k, v in q["border_recall_by_width"].items())
               if "border_recall_by_width" in q else "")
    lines += [f"| look-alikes (precision: not grouped with the picture they resemble) | - | "
              f"{q['lookalike_precision']} |", "",
              "Crops by the largest share trimmed from one side: "
              + ", ".join(f"{k}: {v}" for k, v in q["crop_recall_by_largest_side"].items()) + borders
              + f". Of all pairs of images sharing a group, {q['pair_precision']:.1%} show one picture; "
              f"{q['originals_merged']:.1%} of the distinct originals share a group with another original "
              f"({q.get('matching_original_pairs', '?')} of their {q.get('original_pairs', 0):,} pairs match). The SQL "
              f"found {q['sql_pairs']:,} pairs in {q['sql_s']} s, {q['sql_recall_vs_exact']:.2%} of the "
              f"{q['exact_pairs']:,} an all-pairs scan finds ({q['sql_pairs_not_exact']} others)."]
    if q.get("rules"):
        lines += ["", "The same images by each rule (all-pairs scans):", "",
                  *_recall_table({f"{name}, {r['threshold']} bits": r for name, r in q["rules"].items()}, "rule")]
    if q.get("by_threshold"):
        lines += ["", "The default rule at other thresholds:", "",
                  *_recall_table({str(t): r for t, r in q["by_threshold"].items()}, "threshold (bits)")]
    if c.get("not_caught"):
        n = c["not_caught"]
        lines += ["", f"Changes not looked for, on {n['pictures']} generated pictures: the share still grouped with "
                      f"the original at {n['threshold']} bits, and the median grey bits between the closest views "
                      "(colours aside): " + "; ".join(f"{name} {r['caught']} ({r['median_grey_bits']} bits)"
                                                     for name, r in n.items() if isinstance(r, dict)) + "."]
    if demo:
        lines += ["", f"The demo catalogue's {demo['images']:,} distinct pictures, grouped (every group a false "
                      "match): " + "; ".join(f"{name}: {r['images_in_groups']} images in {r['groups']} groups"
                                             for name, r in demo.items() if isinstance(r, dict))
                  + f" (SQL: {demo['sql_images_in_groups']} in {demo['sql_groups']})."]
    imagehash = ("" if h.get("imagehash_phash_ms_per_image") is None else
                 f"; the imagehash library's pHash alone takes {h['imagehash_phash_ms_per_image']} ms, and ours "
                 f"differs from it by {h['mean_bits_from_imagehash_phash']} bits on average (equal on "
                 f"{h['same_as_imagehash_phash']:.0%} of images)")
    lines += ["", f"Hashing in the loader ({h['images']} photo-sized images, bundled model): "
                  f"{h['loader_without_hashes_images_per_s']} images/s without, {h['loader_with_hashes_images_per_s']} "
                  f"with the hashes; all the hashes cost {h['hash_ms_per_image']} ms per decoded image{imagehash}."
                  + (f" The whole section took {c['seconds']} s." if c.get("seconds") else "")]
    if s:
        lines += ["", "| copies scan: rows | threshold | bands x shuffles | candidate pairs compared | SQL (s) "
                      "| numpy all pairs (s) | recall vs all pairs | planted found |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {s['rows']:,} | {s['threshold']} | {s['bands']} x {s['partitions']} | "
                  f"{s['candidate_pairs']:,} of {s['all_pairs']:,} | {s['sql_s']} | {s['numpy_all_pairs_s']} | "
                  f"{s['recall_vs_exact']} "
                  f"({s['sql_pairs']:,} of {s['exact_pairs']:,}) | {s['planted_found']} / {s['planted_pairs']} |"]
    return lines


def plot_search(runs: list[dict], out: Path) -> None:
    """p50 latency per engine and filter, one panel per table, log scale. Needs matplotlib
    (`pip install -e '.[bench]'`); without it, says so and writes nothing."""
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed (pip install -e '.[bench]'): {out} not written")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [r for r in runs if r.get("engines")]
    fig, axes = plt.subplots(1, len(runs), figsize=(8.5 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        names = [n for n in ("clipsearch", "clipsearch (no filter columns)", *PEERS) if n in run["engines"]]
        filters = list(run["engines"]["clipsearch"])
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            ax.bar([i + j * width for i in range(len(filters))],
                   [run["engines"][name][f]["sql_p50_ms"] for f in filters], width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(filters))], [f"filter: {f}" for f in filters])
        ax.set(yscale="log", ylabel="p50 latency, top-10 (ms)", title=f"{run['rows']:,} x {run['dim']}")
        ax.axhline(10, color="grey", linestyle=":", linewidth=1)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
