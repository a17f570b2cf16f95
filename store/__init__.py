"""The source of truth for users, items and reservations (SQLAlchemy 2).

SQLite by default (the services' transactions through pysqlite on a thread, see
:mod:`store.transactions`; start-up checks and migrations through aiosqlite), PostgreSQL
(asyncpg) when ``DATABASE_URL`` says so. The workers write it; the API reads it, so every API
replica answers from the same state.
"""
