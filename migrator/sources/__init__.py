"""Readers of what we migrate from: `sqlite` (hridaai.db, plain or SQLCipher; the raw-row layout every stage reads)
and `chroma` (the embedded Chroma store, through chromadb or its files).

May import: errors, catalog (identifier quoting). Nothing of the stages.
"""
