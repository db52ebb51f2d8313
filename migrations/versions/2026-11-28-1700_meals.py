"""meals: elders, canteen slots, menus, subsidy policy, bookings, standing orders, notifications

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "elders",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("id_number_enc", sa.LargeBinary(), nullable=False),
        sa.Column("id_number_hmac", sa.String(length=64), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("gender", sa.String(length=1), nullable=False),
        sa.Column("phone_enc", sa.LargeBinary(), nullable=True),
        sa.Column("hukou_district_code", sa.String(length=12), nullable=False),
        sa.Column("street", sa.String(length=64), nullable=False),
        sa.Column("community", sa.String(length=64), nullable=False),
        sa.Column("address_enc", sa.LargeBinary(), nullable=True),
        sa.Column("categories", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("diet_tags", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("allergens", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("emergency_contact_name", sa.String(length=32), nullable=True),
        sa.Column("emergency_contact_phone_enc", sa.LargeBinary(), nullable=True),
        sa.Column("verification_status", sa.String(length=16), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_by_id", sa.UUID(), nullable=True),
        sa.Column("verification_note", sa.String(length=200), nullable=True),
        sa.Column("eligibility_valid_until", sa.Date(), nullable=True),
        sa.Column("registered_by_id", sa.UUID(), nullable=True),
        sa.Column("registration_channel", sa.String(length=16), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("gender IN ('M','F')", name=op.f("ck_elders_gender_known")),
        sa.CheckConstraint(
            "verification_status IN ('pending','verified','rejected')",
            name=op.f("ck_elders_verification_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["hukou_district_code"], ["districts.code"], name=op.f("fk_elders_hukou_district_code_districts")
        ),
        sa.ForeignKeyConstraint(
            ["registered_by_id"], ["users.id"], name=op.f("fk_elders_registered_by_id_users")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_elders_user_id_users")),
        sa.ForeignKeyConstraint(
            ["verified_by_id"], ["users.id"], name=op.f("fk_elders_verified_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_elders")),
        sa.UniqueConstraint("id_number_hmac", name=op.f("uq_elders_id_number_hmac")),
    )
    op.create_index(op.f("ix_elders_hukou_district_code"), "elders", ["hukou_district_code"], unique=False)
    op.create_index(
        "uq_elders_user_id",
        "elders",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_table(
        "subscribe_quotas",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("template_id", sa.String(length=64), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "used >= 0 AND used <= granted", name=op.f("ck_subscribe_quotas_used_within_granted")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_subscribe_quotas_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscribe_quotas")),
        sa.UniqueConstraint("user_id", "template_id", name=op.f("uq_subscribe_quotas_user_id_template_id")),
    )
    op.create_table(
        "subsidy_policies",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("city", sa.String(length=32), nullable=False),
        sa.Column("district_code", sa.String(length=12), nullable=True),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("effective_to", sa.Date(), nullable=True),
        sa.Column("min_self_pay_fen", sa.BigInteger(), nullable=False),
        sa.Column("min_spend_fen", sa.BigInteger(), nullable=False),
        sa.Column("require_hukou_district", sa.Boolean(), nullable=False),
        sa.Column("subsidized_slots", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("charity_rules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("charity_cap_fen", sa.BigInteger(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from",
            name=op.f("ck_subsidy_policies_period_ordered"),
        ),
        sa.CheckConstraint(
            "min_self_pay_fen >= 0 AND min_spend_fen >= 0 AND charity_cap_fen >= 0",
            name=op.f("ck_subsidy_policies_amounts_nonneg"),
        ),
        sa.ForeignKeyConstraint(
            ["district_code"], ["districts.code"], name=op.f("fk_subsidy_policies_district_code_districts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subsidy_policies")),
    )
    op.create_table(
        "canteen_slots",
        sa.Column("canteen_id", sa.UUID(), nullable=False),
        sa.Column("slot", sa.String(length=16), nullable=False),
        sa.Column("serve_start", sa.Time(), nullable=False),
        sa.Column("serve_end", sa.Time(), nullable=False),
        sa.Column("cutoff_days_before", sa.Integer(), nullable=False),
        sa.Column("cutoff_time", sa.Time(), nullable=False),
        sa.Column("default_capacity", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "slot IN ('breakfast','lunch','dinner')", name=op.f("ck_canteen_slots_slot_known")
        ),
        sa.CheckConstraint(
            "cutoff_days_before BETWEEN 0 AND 7", name=op.f("ck_canteen_slots_cutoff_days_range")
        ),
        sa.CheckConstraint("default_capacity >= 0", name=op.f("ck_canteen_slots_capacity_nonneg")),
        sa.CheckConstraint("serve_start < serve_end", name=op.f("ck_canteen_slots_window_ordered")),
        sa.ForeignKeyConstraint(
            ["canteen_id"], ["canteens.id"], name=op.f("fk_canteen_slots_canteen_id_canteens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canteen_slots")),
        sa.UniqueConstraint("canteen_id", "slot", name=op.f("uq_canteen_slots_canteen_id_slot")),
    )
    op.create_index(op.f("ix_canteen_slots_canteen_id"), "canteen_slots", ["canteen_id"], unique=False)
    op.create_table(
        "elder_invites",
        sa.Column("elder_id", sa.UUID(), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("created_by_id", sa.UUID(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_id", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_elder_invites_created_by_id_users")
        ),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_elder_invites_elder_id_elders")),
        sa.ForeignKeyConstraint(["used_by_id"], ["users.id"], name=op.f("fk_elder_invites_used_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_elder_invites")),
        sa.UniqueConstraint("code", name=op.f("uq_elder_invites_code")),
    )
    op.create_index(op.f("ix_elder_invites_elder_id"), "elder_invites", ["elder_id"], unique=False)
    op.create_table(
        "menus",
        sa.Column("canteen_id", sa.UUID(), nullable=False),
        sa.Column("service_date", sa.Date(), nullable=False),
        sa.Column("slot", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("published_by_id", sa.UUID(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('published','superseded')", name=op.f("ck_menus_status_known")),
        sa.ForeignKeyConstraint(["canteen_id"], ["canteens.id"], name=op.f("fk_menus_canteen_id_canteens")),
        sa.ForeignKeyConstraint(
            ["published_by_id"], ["users.id"], name=op.f("fk_menus_published_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_menus")),
    )
    op.create_index(
        "uq_menus_published",
        "menus",
        ["canteen_id", "service_date", "slot"],
        unique=True,
        postgresql_where=sa.text("status = 'published'"),
    )
    op.create_table(
        "slot_days",
        sa.Column("canteen_id", sa.UUID(), nullable=False),
        sa.Column("service_date", sa.Date(), nullable=False),
        sa.Column("slot", sa.String(length=16), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("booked_meals", sa.Integer(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "booked_meals >= 0 AND booked_meals <= capacity", name=op.f("ck_slot_days_within_capacity")
        ),
        sa.ForeignKeyConstraint(
            ["canteen_id"], ["canteens.id"], name=op.f("fk_slot_days_canteen_id_canteens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slot_days")),
        sa.UniqueConstraint(
            "canteen_id", "service_date", "slot", name=op.f("uq_slot_days_canteen_id_service_date_slot")
        ),
    )
    op.create_table(
        "standing_orders",
        sa.Column("elder_id", sa.UUID(), nullable=False),
        sa.Column("canteen_id", sa.UUID(), nullable=False),
        sa.Column("slot", sa.String(length=16), nullable=False),
        sa.Column("weekdays", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("item_name", sa.String(length=64), nullable=True),
        sa.Column("pause_until", sa.Date(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_by_id", sa.UUID(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "mode IN ('dine_in','pickup','delivery')", name=op.f("ck_standing_orders_mode_known")
        ),
        sa.CheckConstraint(
            "slot IN ('breakfast','lunch','dinner')", name=op.f("ck_standing_orders_slot_known")
        ),
        sa.CheckConstraint(
            "cardinality(weekdays) BETWEEN 1 AND 7", name=op.f("ck_standing_orders_weekdays_present")
        ),
        sa.ForeignKeyConstraint(
            ["canteen_id"], ["canteens.id"], name=op.f("fk_standing_orders_canteen_id_canteens")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_standing_orders_created_by_id_users")
        ),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_standing_orders_elder_id_elders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_standing_orders")),
    )
    op.create_index(op.f("ix_standing_orders_elder_id"), "standing_orders", ["elder_id"], unique=False)
    op.create_table(
        "subsidy_tiers",
        sa.Column("policy_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("min_age", sa.Integer(), nullable=False),
        sa.Column("max_age", sa.Integer(), nullable=True),
        sa.Column("categories", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount_fen >= 0", name=op.f("ck_subsidy_tiers_amount_nonneg")),
        sa.CheckConstraint(
            "max_age IS NULL OR max_age >= min_age", name=op.f("ck_subsidy_tiers_ages_ordered")
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["subsidy_policies.id"], name=op.f("fk_subsidy_tiers_policy_id_subsidy_policies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subsidy_tiers")),
    )
    op.create_index(op.f("ix_subsidy_tiers_policy_id"), "subsidy_tiers", ["policy_id"], unique=False)
    op.create_table(
        "bookings",
        sa.Column("elder_id", sa.UUID(), nullable=False),
        sa.Column("canteen_id", sa.UUID(), nullable=False),
        sa.Column("menu_id", sa.UUID(), nullable=False),
        sa.Column("service_date", sa.Date(), nullable=False),
        sa.Column("slot", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("meals", sa.Integer(), nullable=False),
        sa.Column("subsidized", sa.Boolean(), nullable=False),
        sa.Column("policy_id", sa.UUID(), nullable=True),
        sa.Column("serve_code", sa.String(length=6), nullable=False),
        sa.Column("cutoff_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("serve_start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("serve_end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("list_price_fen", sa.BigInteger(), nullable=False),
        sa.Column("gov_subsidy_fen", sa.BigInteger(), nullable=False),
        sa.Column("charity_subsidy_fen", sa.BigInteger(), nullable=False),
        sa.Column("delivery_fee_fen", sa.BigInteger(), nullable=False),
        sa.Column("self_pay_fen", sa.BigInteger(), nullable=False),
        sa.Column("booked_by_id", sa.UUID(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("standing_order_id", sa.UUID(), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_by_id", sa.UUID(), nullable=True),
        sa.Column("cancel_channel", sa.String(length=16), nullable=True),
        sa.Column("cancel_reason", sa.String(length=200), nullable=True),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("served_by_id", sa.UUID(), nullable=True),
        sa.Column("serve_method", sa.String(length=16), nullable=True),
        sa.Column("self_pay_method", sa.String(length=16), nullable=True),
        sa.Column("no_show_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "channel IN ('self','proxy','counter','phone','standing_order','system')",
            name=op.f("ck_bookings_channel_known"),
        ),
        sa.CheckConstraint("mode IN ('dine_in','pickup','delivery')", name=op.f("ck_bookings_mode_known")),
        sa.CheckConstraint(
            "status IN ('confirmed','cancelled','served','no_show')", name=op.f("ck_bookings_status_known")
        ),
        sa.CheckConstraint(
            "list_price_fen >= 0 AND gov_subsidy_fen >= 0 AND charity_subsidy_fen >= 0 "
            "AND delivery_fee_fen >= 0 AND self_pay_fen >= 0",
            name=op.f("ck_bookings_amounts_nonneg"),
        ),
        sa.CheckConstraint("meals > 0", name=op.f("ck_bookings_meals_positive")),
        sa.CheckConstraint(
            "self_pay_fen = list_price_fen + delivery_fee_fen - gov_subsidy_fen - charity_subsidy_fen",
            name=op.f("ck_bookings_breakdown_adds_up"),
        ),
        sa.ForeignKeyConstraint(["booked_by_id"], ["users.id"], name=op.f("fk_bookings_booked_by_id_users")),
        sa.ForeignKeyConstraint(
            ["cancelled_by_id"], ["users.id"], name=op.f("fk_bookings_cancelled_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["canteen_id"], ["canteens.id"], name=op.f("fk_bookings_canteen_id_canteens")
        ),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_bookings_elder_id_elders")),
        sa.ForeignKeyConstraint(["menu_id"], ["menus.id"], name=op.f("fk_bookings_menu_id_menus")),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["subsidy_policies.id"], name=op.f("fk_bookings_policy_id_subsidy_policies")
        ),
        sa.ForeignKeyConstraint(["served_by_id"], ["users.id"], name=op.f("fk_bookings_served_by_id_users")),
        sa.ForeignKeyConstraint(
            ["standing_order_id"],
            ["standing_orders.id"],
            name=op.f("fk_bookings_standing_order_id_standing_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
    )
    op.create_index(
        "ix_bookings_canteen_day", "bookings", ["canteen_id", "service_date", "slot"], unique=False
    )
    op.create_index("ix_bookings_elder_day", "bookings", ["elder_id", "service_date"], unique=False)
    op.create_index(
        "uq_bookings_one_subsidized_meal_per_day",
        "bookings",
        ["elder_id", "service_date"],
        unique=True,
        postgresql_where=sa.text("subsidized AND status IN ('confirmed','served')"),
    )
    op.create_index(
        "uq_bookings_serve_code", "bookings", ["canteen_id", "service_date", "serve_code"], unique=True
    )
    op.create_table(
        "family_bindings",
        sa.Column("elder_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("relationship", sa.String(length=16), nullable=False),
        sa.Column("consent_text", sa.Text(), nullable=False),
        sa.Column("consented_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invite_id", sa.UUID(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_family_bindings_elder_id_elders")),
        sa.ForeignKeyConstraint(
            ["invite_id"], ["elder_invites.id"], name=op.f("fk_family_bindings_invite_id_elder_invites")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_family_bindings_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_family_bindings")),
    )
    op.create_index(op.f("ix_family_bindings_elder_id"), "family_bindings", ["elder_id"], unique=False)
    op.create_index(op.f("ix_family_bindings_user_id"), "family_bindings", ["user_id"], unique=False)
    op.create_index(
        "uq_family_bindings_active",
        "family_bindings",
        ["elder_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_table(
        "menu_items",
        sa.Column("menu_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("diet_tags", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("allergens", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("is_special", sa.Boolean(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("sold", sa.Integer(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('set_meal','dish')", name=op.f("ck_menu_items_kind_known")),
        sa.CheckConstraint("price_fen > 0", name=op.f("ck_menu_items_price_positive")),
        sa.CheckConstraint(
            "sold >= 0 AND (stock IS NULL OR sold <= stock)", name=op.f("ck_menu_items_within_stock")
        ),
        sa.ForeignKeyConstraint(["menu_id"], ["menus.id"], name=op.f("fk_menu_items_menu_id_menus")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_menu_items")),
    )
    op.create_index(op.f("ix_menu_items_menu_id"), "menu_items", ["menu_id"], unique=False)
    op.create_table(
        "booking_lines",
        sa.Column("booking_id", sa.UUID(), nullable=False),
        sa.Column("menu_item_id", sa.UUID(), nullable=False),
        sa.Column("item_name", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_fen", sa.BigInteger(), nullable=False),
        sa.Column("is_elder_meal", sa.Boolean(), nullable=False),
        sa.Column("list_price_fen", sa.BigInteger(), nullable=False),
        sa.Column("gov_subsidy_fen", sa.BigInteger(), nullable=False),
        sa.Column("charity_subsidy_fen", sa.BigInteger(), nullable=False),
        sa.Column("delivery_fee_fen", sa.BigInteger(), nullable=False),
        sa.Column("self_pay_fen", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "is_elder_meal OR (gov_subsidy_fen = 0 AND charity_subsidy_fen = 0)",
            name=op.f("ck_booking_lines_extras_unsubsidized"),
        ),
        sa.CheckConstraint(
            "list_price_fen >= 0 AND gov_subsidy_fen >= 0 AND charity_subsidy_fen >= 0 "
            "AND delivery_fee_fen >= 0 AND self_pay_fen >= 0",
            name=op.f("ck_booking_lines_amounts_nonneg"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_booking_lines_quantity_positive")),
        sa.CheckConstraint(
            "self_pay_fen = list_price_fen + delivery_fee_fen - gov_subsidy_fen - charity_subsidy_fen",
            name=op.f("ck_booking_lines_breakdown_adds_up"),
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["bookings.id"], name=op.f("fk_booking_lines_booking_id_bookings")
        ),
        sa.ForeignKeyConstraint(
            ["menu_item_id"], ["menu_items.id"], name=op.f("fk_booking_lines_menu_item_id_menu_items")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking_lines")),
    )
    op.create_index(op.f("ix_booking_lines_booking_id"), "booking_lines", ["booking_id"], unique=False)
    op.create_index(op.f("ix_booking_lines_menu_item_id"), "booking_lines", ["menu_item_id"], unique=False)
    op.create_table(
        "meal_notifications",
        sa.Column("booking_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("template_id", sa.String(length=64), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("page", sa.String(length=256), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "kind IN ('booking_confirmed','meal_reminder','cancelled_by_canteen')",
            name=op.f("ck_meal_notifications_kind_known"),
        ),
        sa.CheckConstraint(
            "status IN ('pending','sent','no_quota','failed')",
            name=op.f("ck_meal_notifications_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["bookings.id"], name=op.f("fk_meal_notifications_booking_id_bookings")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_meal_notifications_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meal_notifications")),
        sa.UniqueConstraint(
            "booking_id", "kind", "user_id", name=op.f("uq_meal_notifications_booking_id_kind_user_id")
        ),
    )
    op.create_index(op.f("ix_meal_notifications_user_id"), "meal_notifications", ["user_id"], unique=False)
    op.create_table(
        "standing_order_runs",
        sa.Column("standing_order_id", sa.UUID(), nullable=False),
        sa.Column("service_date", sa.Date(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason_code", sa.String(length=48), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("booking_id", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('booked','skipped')", name=op.f("ck_standing_order_runs_outcome_known")
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["bookings.id"], name=op.f("fk_standing_order_runs_booking_id_bookings")
        ),
        sa.ForeignKeyConstraint(
            ["standing_order_id"],
            ["standing_orders.id"],
            name=op.f("fk_standing_order_runs_standing_order_id_standing_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_standing_order_runs")),
        sa.UniqueConstraint(
            "standing_order_id",
            "service_date",
            name=op.f("uq_standing_order_runs_standing_order_id_service_date"),
        ),
    )
    # ### end Alembic commands ###


def downgrade() -> None:
    op.drop_table("standing_order_runs")
    op.drop_table("meal_notifications")
    op.drop_table("booking_lines")
    op.drop_table("menu_items")
    op.drop_table("family_bindings")
    op.drop_table("bookings")
    op.drop_table("subsidy_tiers")
    op.drop_table("standing_orders")
    op.drop_table("slot_days")
    op.drop_table("menus")
    op.drop_table("elder_invites")
    op.drop_table("canteen_slots")
    op.drop_table("subsidy_policies")
    op.drop_table("subscribe_quotas")
    op.drop_table("elders")
