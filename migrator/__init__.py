"""hridaai-migrate: move a HridaAI installation from SQLite + Chroma to PostgreSQL + pgvector."""

__version__ = "0.1.0"
