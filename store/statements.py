"""The hot-path statements, built once.

SQLAlchemy then reuses their cache keys and compiled SQL instead of rebuilding both for every
message. Bind names must not match column names in an UPDATE, hence the ``p_`` prefix.
"""

from sqlalchemy import bindparam, func, insert, select, update

from domain.reservations import Outcome
from store.tables import items, reservations, users

PRICE = select(items.c.price).where(items.c.item_id == bindparam("p_item_id")).scalar_subquery()
# The check and the deduction in one statement: concurrent reservations for the same user can
# never both spend the same credits.
DEDUCT = (
    update(users)
    .where(users.c.username == bindparam("p_username"), users.c.credits >= PRICE)
    .values(credits=users.c.credits - PRICE)
    .returning(users.c.credits, PRICE.label("price"))
)
# After a DEDUCT that did not happen, the row is locked (PostgreSQL; SQLite's BEGIN IMMEDIATE
# already holds the file's write lock), so the balance it reads is the one a second DEDUCT meets.
BALANCE_AND_PRICE = (
    select(users.c.credits, PRICE.label("price"))
    .where(users.c.username == bindparam("p_username"))
    .with_for_update(of=users)
)
RECORD = insert(reservations)
BY_ID = select(reservations).where(reservations.c.reservation_id == bindparam("p_id"))
PREPARE_DOWNLOAD = (
    update(reservations)
    .where(
        reservations.c.reservation_id == bindparam("p_id"),
        reservations.c.outcome == Outcome.CONFIRMED.value,
        reservations.c.download_token.is_(None),
    )
    .values(download_token=bindparam("p_token"), ready_at=func.now())
    .returning(*reservations.c)
)
USER_EXISTS = select(users.c.username).where(users.c.username == bindparam("p_username"))
