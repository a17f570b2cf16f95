"""Table definitions (SQLAlchemy Core: the hot path is three statements, no ORM needed)."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("credits", Integer, nullable=False),
    # The last line of defence: no code path may drive a balance negative.
    CheckConstraint("credits >= 0", name="users_credits_not_negative"),
)

items = Table(
    "items",
    metadata,
    Column("item_id", String(64), primary_key=True),
    Column("price", Integer, nullable=False),
    CheckConstraint("price >= 0", name="items_price_not_negative"),
)

# One row per reservation id, whatever the outcome: the primary key is the idempotency key.
reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", String(36), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("outcome", String(40), nullable=False),
    Column("price", Integer),
    Column("credits_left", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("download_token", String(64), unique=True),
    Column("ready_at", DateTime(timezone=True)),
    # The trace of the request that created it (32 hex digits), so a 202 can be followed.
    Column("trace_id", String(32)),
)

# A client's Idempotency-Key, per endpoint (scope), bound to the reservation id of its first
# request; expires_at is in seconds since the epoch (plain integers compare alike everywhere).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("reservation_id", String(36), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("idempotency_keys_expires_at", "expires_at"),
)
