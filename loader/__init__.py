"""Bulk loading: folders and CSV/JSONL manifests into rows of `images`."""
