"""Writers to what we migrate into: `postgres` (connections with operator-facing errors, COPY, the target's state,
sequences) and `pgvector` (`document_chunk` exactly as HridaAI's pgvector client creates it, vector encoding and
padding, the vector index).

May import: errors, settings (DSN masking), catalog. Nothing of the stages, and no conversion policy: values reach a
target already converted.
"""
