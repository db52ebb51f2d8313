"""bookings: the slot's capacity and the items' stock are taken by deferred constraint triggers

A booking used to take its slot's capacity (and a limited item's stock) with an UPDATE from the application, and
held that row lock until its commit: every round trip between that UPDATE and the COMMIT was time in which no
other booking of the slot could proceed. The same conditional UPDATEs now run in constraint triggers that
PostgreSQL fires when the transaction commits (``DEFERRABLE INITIALLY DEFERRED``), so the slot's row is locked
only for the commit itself. A transaction may fire them earlier with ``SET CONSTRAINTS … IMMEDIATE`` (a booking
that draws on donated money does, to keep the lock order slot → items → charity pools).

A refusal raises SQLSTATE ``SY409`` with the reason as the message (``SlotFull`` / ``ItemSoldOut``), the row
in DETAIL and, for an item, its name in HINT; the application turns that into its 409.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 00:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION booking_take_capacity() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE slot_days SET booked_meals = booked_meals + NEW.meals, updated_at = now()
             WHERE canteen_id = NEW.canteen_id AND service_date = NEW.service_date AND slot = NEW.slot
               AND booked_meals + NEW.meals <= capacity;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'SlotFull' USING ERRCODE = 'SY409', DETAIL = NEW.id::text;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION booking_line_take_stock() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            item_name text;
        BEGIN
            -- unlimited items (stock IS NULL) are not counted, so their row is not locked
            UPDATE menu_items SET sold = sold + NEW.quantity, updated_at = now()
             WHERE id = NEW.menu_item_id AND stock IS NOT NULL AND sold + NEW.quantity <= stock;
            IF NOT FOUND THEN
                SELECT name INTO item_name FROM menu_items WHERE id = NEW.menu_item_id AND stock IS NOT NULL;
                IF FOUND THEN
                    RAISE EXCEPTION 'ItemSoldOut' USING ERRCODE = 'SY409', DETAIL = NEW.menu_item_id::text,
                        HINT = item_name;
                END IF;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER bookings_take_capacity AFTER INSERT ON bookings "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.status IN ('confirmed', 'served')) "
        "EXECUTE FUNCTION booking_take_capacity()"
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER booking_lines_take_stock AFTER INSERT ON booking_lines "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION booking_line_take_stock()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER booking_lines_take_stock ON booking_lines")
    op.execute("DROP TRIGGER bookings_take_capacity ON bookings")
    op.execute("DROP FUNCTION booking_line_take_stock()")
    op.execute("DROP FUNCTION booking_take_capacity()")
