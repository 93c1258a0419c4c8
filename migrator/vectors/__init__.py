"""The vector lane: Chroma collections into HridaAI's pgvector `document_chunk`, planned, loaded and verified.

`plan` describes the store (collections, counts, dimensions, id collisions) and checks the pgvector target;
`source` opens the snapshot's Chroma copy (the direct file reader, or chromadb where the reader does not know the
store for certain); `load` copies each collection in ledgered batches (`vector:<name>` units) and
builds the vector index; `verify` compares every chunk and measures retrieval.

May import: context, settings, errors, progress, ledger, snapshot, parallel, plan.model, convert, sources,
targets. Never the table lane's load, verify or plan.build.
"""
