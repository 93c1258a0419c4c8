"""Reading an embedded Chroma store: through chromadb (`client`) or straight from its files (`direct`).

`client` — chromadb's own API (and the shared Batch/Chunk/CollectionInfo types); `direct` — chroma.sqlite3 plus
the HNSW segment files (`hnsw`), in chromadb's `get` order; `collections` — the collection list from
chroma.sqlite3; `store` — what a store on disk is (version, files) for the snapshot.

May import: errors, sources.sqlite. Nothing of the stages.
"""
