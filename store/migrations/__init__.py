"""Alembic migrations of the store's schema; ``python -m store.migrate`` applies them."""
