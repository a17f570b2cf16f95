"""The source of truth for users, items and reservations (SQLAlchemy 2 async).

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) when ``DATABASE_URL`` says so. The workers
write it; the API reads it, so every API replica answers from the same state.
"""
