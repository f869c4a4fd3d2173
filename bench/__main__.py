"""Benchmarks, each against a baseline measured in the same run. From the repository root:

    python -m bench [--images 3000] [--vectors 100000,1000000] [--dim 512] [--duplicates 20000,100000]
                    [--copies-originals 2000] [--copies-rows 100000]
                    [--quantization-rows 300000]
                    [--skip-vit] [--only loader,service,search,quantization,memory,duplicates,copies,analysts]
                    [--out DIR]

loader      Loader throughput (decode in workers + encode + insert) against the model's raw encode
            speed and one-process decoding on the same images: the bundled model, and ViT-B-32 with
            random weights as a stand-in for a real CLIP (bench/loader.py); and `clipsearch reembed` of
            the ViT run's images from the bundled model to ViT-B-32 against its raw encode speed.
service     `clipsearch serve` under 16 concurrent clients against the same searches in-process
            (bench/service.py).
search      clipsearch's search per filter selectivity at real CLIP size (--dim 512) beside numpy,
            faiss and DuckDB on the same vectors and filters: latency, recall@10, the ratio to the best
            peer, where an exact scan's time goes (bench/search.py).
quantization  The HNSW index stored as f16, bf16, f32, i8 and b1 on the search benchmark's table and
            queries: build time, latency, recall@10 and score error per search beam (bench/quantization.py).
memory      Peak memory of `clipsearch serve` and `clipsearch load` on the largest search table
            (bench/memory.py; run search first).
duplicates  The near-duplicate scan on clustered vectors with planted copies against an exact
            all-pairs numpy scan, and the bundled model's copy distances (bench/duplicates.py).
copies      Copies by perceptual hash: recall per kind of change and precision against look-alikes on
            generated images, the loader with and without hashing, and the SQL band search on 100,000
            rows of hash values against an exact all-pairs Hamming scan in numpy (bench/copies.py).
analysts    The CLI's query, a second analyst's and a page search while 20 slow analyst queries run on a
            served folder's ClickHouse port, from one session and from 20, against idle (bench/analysts.py).
words       Words and pictures in one ranking (issue 35): P@10 per query group for match=pictures, words and
            both on `shapes.words_catalogue` (--words-products) and on camera-named files; `both` against
            `pictures` at --words-rows x --dim rows with Zipf-spread names and titles, exact and HNSW, with
            and without a filter; the loader with and without words (bench/words.py).
videos      Loading 720p videos (H.264, 30 fps, a cut every 5 s): moments stored per second, frames and seconds of
            video loaded per second, against PyAV decoding the same files in one process (bench/videos.py;
            needs the video extra). --videos N, --video-seconds S.
ocr         OCR's share of words found in text drawn into generated pictures, per font, size, rotation
            and background, and seconds per image (bench/ocr.py; needs the ocr extra).
throughput  Many people searching at once: `clipsearch serve` under 16 clients sending Zipf-drawn texts
            (5,000 distinct) against Flask + waitress + numpy in RAM with an LRU of encoded texts, at 400
            loaded images and at 200,400 rows with the HNSW index, each cache lever on and off
            (bench/throughput.py).
report      Nothing measured: rewrite results.md and search.png from results.json.

Writes results.json, results.md and search.png (bench/report.py) to --out (default bench/); with
--only, the other sections' results are kept from the results.json there.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench import (
    analysts,
    common,
    copies,
    duplicates,
    loader,
    memory,
    quantization,
    report,
    search,
    served,
    service,
    throughput,
    videos,
)
from bench import ocr as ocr_accuracy
from bench import words as words_bench
from clipsearch.models.clip import ClipModel

BUNDLED, VIT = "clipsearch-shapes (bundled)", "ViT-B-32 (random weights)"
SECTIONS = ("loader", "service", "search", "quantization", "memory", "duplicates", "served", "copies", "analysts",
            "ocr", "words", "throughput", "videos")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000, help="generated images for the loader and service runs")
    parser.add_argument("--vit-images", type=int, default=256, help="generated images for the ViT-B-32 loader run")
    parser.add_argument("--vectors", default="100000",
                        help="table sizes for the search benchmark, comma-separated (e.g. 100000,1000000)")
    parser.add_argument("--dim", type=int, default=512,
                        help="vector dimensions for the search benchmark (512 as ViT-B-32; 128 as the bundled "
                             "model, which the memory benchmark needs; 768 as ViT-L-14)")
    parser.add_argument("--search-comparison-only", action="store_true",
                        help="the search section's comparison with its peers alone (no scan costs, codecs, QBit or "
                             "levers): for repeated runs at a million rows")
    parser.add_argument("--quantization-rows", type=int, default=300_000,
                        help="table size for the quantization benchmark (at --dim)")
    parser.add_argument("--duplicates", default="20000,100000", help="table sizes for the near-duplicate scan")
    parser.add_argument("--copies-originals", type=int, default=2000,
                        help="generated originals for the copies benchmark (each with a look-alike and 6 copies)")
    parser.add_argument("--copies-rows", type=int, default=100_000, help="rows of hash values for the copies SQL scan")
    parser.add_argument("--service-db", type=Path,
                        help="the folder the service section serves (default: the loader's 3,000 images); e.g. a "
                             "million rows made by `python -m bench.dataset` with `clipsearch index create`")
    parser.add_argument("--words-products", type=int, default=2000, help="products in the words quality catalogue")
    parser.add_argument("--words-rows", type=int, default=200_000, help="table size for the words speed benchmark")
    parser.add_argument("--words-loader-images", type=int, default=1000,
                        help="generated images for the words section's loader comparison")
    parser.add_argument("--throughput-rows", type=int, default=200_000,
                        help="rows added to the 400 loaded images for the throughput section's large store")
    parser.add_argument("--throughput-requests", type=int, default=1600, help="searches per server and size")
    parser.add_argument("--videos", type=int, default=6, help="720p videos for the videos section")
    parser.add_argument("--video-seconds", type=float, default=60.0, help="seconds per video for the videos section")
    parser.add_argument("--skip-vit", action="store_true", help="skip the ViT-B-32 (random weights) loader run")
    parser.add_argument("--served-images", type=int, default=10_000,
                        help="images loaded through a running service for the served section")
    parser.add_argument("--only", help="run only these sections (loader,service,search,quantization,memory,"
                                       "duplicates,served,copies,analysts,ocr,words,throughput; or report) "
                                       "and keep the others' results from the last run")
    parser.add_argument("--out", type=Path, default=common.HERE,
                        help="folder for results.json, results.md and search.png (default: bench/)")
    parser.add_argument("--work", type=Path, default=common.WORK,
                        help="folder for the generated images and databases (default: bench/work/)")
    args = parser.parse_args(argv)
    args.sections = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = args.sections - set(SECTIONS) - {"report"}
    if unknown:
        parser.error(f"unknown section {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}, report")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only, work = args.sections, args.work
    work.mkdir(parents=True, exist_ok=True)
    previous = args.out / "results.json"
    results = json.loads(previous.read_text()) if args.only and previous.exists() else {}
    if only - {"report"}:
        results.update(machine=report.machine(), date=time.strftime("%Y-%m-%d"))
    elif not results:
        raise SystemExit(f"{previous}: nothing to report")
    bundled_db = work / "db-bundled"
    if "loader" in only:
        paths = common.write_images(work / "images", args.images)
        results["loader"] = [show(loader.run(ClipModel(), paths, BUNDLED, bundled_db))]
        if not args.skip_vit:
            paths = common.write_images(work / "images-vit", args.vit_images)
            vit = ClipModel("ViT-B-32", "random")
            results["loader"].append(show(loader.run(vit, paths, VIT, work / "db-vit")))
            raw = results["loader"][-1]["raw_encode_images_per_s"]
            results["reembed"] = [show(loader.reembed_run(vit, raw, paths, VIT, work / "db-reembed"))]
    if "service" in only:
        if args.service_db is None and not bundled_db.exists():
            loader.run(ClipModel(), common.write_images(work / "images", args.images), BUNDLED, bundled_db)
        row = show(service.run(args.service_db or bundled_db))
        earlier = results.pop("service_runs", None) or ([results.pop("service")] if results.get("service") else [])
        for r in earlier:   # runs before the table size was recorded served the loader's images
            r.setdefault("images", results.get("loader", [{}])[0].get("images", 0))
        # one row per table size: this run replaces an earlier one on as many images
        results["service_runs"] = sorted([r for r in earlier if r["images"] != row["images"]] + [row],
                                         key=lambda r: r["images"])
    if "search" in only:
        results["search"] = [search.run(int(n), ClipModel(), work, args.dim, not args.search_comparison_only)
                             for n in args.vectors.split(",")]
    if "quantization" in only:
        results["quantization"] = quantization.run(args.quantization_rows, ClipModel(), work, args.dim)
    if "memory" in only:
        db = work / f"db-search-{args.vectors.split(',')[-1]}-d128"
        if not db.exists():
            raise SystemExit(f"{db} not found: the memory benchmark searches the search benchmark's largest table "
                             f"with the bundled model; run --only search,memory --dim 128 --vectors {args.vectors}")
        results["memory"] = show(memory.run(db, work))
    if "duplicates" in only:
        results["duplicates"] = [show(duplicates.run(int(n), work)) for n in args.duplicates.split(",")]
        results["bundled_copies"] = show(duplicates.bundled_copy_distances(ClipModel()))
    if "copies" in only:
        results["copies"] = show(copies.run(args.copies_originals, args.copies_rows, ClipModel(), work))
    if "served" in only:
        results["served"] = show(served.run(work, load_images=args.served_images))
    if "analysts" in only:
        results["analysts"] = show(analysts.run(work))
    if "ocr" in only:
        results["ocr"] = show(ocr_accuracy.run())
    if "videos" in only:
        results["videos"] = show(videos.run(ClipModel(), work, args.videos, args.video_seconds))
    if "words" in only:
        results["words"] = words_bench.run(ClipModel(), work, args.words_products, args.words_rows, args.dim,
                                           args.words_loader_images)
    if "throughput" in only:
        results["throughput"] = throughput.run(ClipModel(), work, 400, args.throughput_rows,
                                               args.throughput_requests)
    print(report.write(results, args.out, plot=bool(only & {"search", "report"})))
    return 0


def show(result: dict) -> dict:
    print(result, flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
