"""Talking to the web safely: the SSRF-guarded fetcher, HTTP status classification, secrets and their
redaction, and bounded image decoding.

A leaf package: it imports nothing of mmsearch_env but :mod:`mmsearch_env.errors`, so datasets (image URLs)
and search backends (pages, thumbnails, APIs) can both use it without importing each other.
"""
