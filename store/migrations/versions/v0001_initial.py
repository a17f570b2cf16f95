"""The initial schema: users, items and reservations, as store/tables.py describes them.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("credits", sa.Integer, nullable=False),
        sa.CheckConstraint("credits >= 0", name="users_credits_not_negative"),
    )
    op.create_table(
        "items",
        sa.Column("item_id", sa.String(64), primary_key=True),
        sa.Column("price", sa.Integer, nullable=False),
        sa.CheckConstraint("price >= 0", name="items_price_not_negative"),
    )
    op.create_table(
        "reservations",
        sa.Column("reservation_id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("price", sa.Integer),
        sa.Column("credits_left", sa.Integer),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("download_token", sa.String(64), unique=True),
        sa.Column("ready_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("reservations")
    op.drop_table("items")
    op.drop_table("users")
