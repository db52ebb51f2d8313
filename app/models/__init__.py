"""Every ORM model, imported here so Alembic sees one metadata."""

from app.models.allocation import Allocation
from app.models.audit_log import AuditLog
from app.models.auth_session import AuthSession
from app.models.base import Base
from app.models.booking import Booking, BookingMode, BookingStatus, Channel
from app.models.booking_line import BookingLine
from app.models.canteen import Canteen, CanteenType
from app.models.canteen_slot import CanteenSlot, MealSlot
from app.models.charity_hold import CharityHold, HoldStatus
from app.models.district import District
from app.models.donation import Donation, DonationChannel, DonationStatus
from app.models.donation_invoice_request import DonationInvoiceRequest
from app.models.donation_lot import DonationLot
from app.models.donation_refund import DonationRefund, RefundStatus
from app.models.donation_target import DonationTarget, DonationTargetKind
from app.models.donor_digest import DonorDigest
from app.models.elder import DietTag, Elder, ElderCategory, VerificationStatus
from app.models.elder_invite import ElderInvite
from app.models.family_binding import FamilyBinding
from app.models.feed_aggregate import FeedAggregate
from app.models.feed_event import FeedEvent
from app.models.fund import Fund, FundPurpose
from app.models.idempotency_key import IdempotencyKey
from app.models.job_outbox import JobOutbox
from app.models.journal_entry import JournalEntry, JournalSeal, UnsealedEntry
from app.models.ledger_account import LedgerAccount
from app.models.ledger_digest import LedgerDigest
from app.models.meal_notification import MealNotification
from app.models.menu import Menu
from app.models.menu_item import MenuItem
from app.models.payment_inbox import PaymentInbox
from app.models.posting import Posting
from app.models.receipt_counter import ReceiptCounter
from app.models.reconciliation_discrepancy import ReconciliationDiscrepancy
from app.models.reconciliation_run import ReconciliationRun
from app.models.role_grant import Role, RoleGrant
from app.models.sandbox_wechat_message import SandboxWeChatMessage
from app.models.sandbox_wechatpay_order import SandboxWeChatPayOrder
from app.models.sandbox_wechatpay_refund import SandboxWeChatPayRefund
from app.models.settlement import Settlement, SettlementStatus
from app.models.settlement_line import SettlementLine
from app.models.slot_day import SlotDay
from app.models.staff_account import StaffAccount, StaffRole
from app.models.staff_session import StaffSession
from app.models.standing_order import StandingOrder
from app.models.standing_order_run import StandingOrderRun
from app.models.subscribe_quota import SubscribeQuota
from app.models.subsidy_policy import SubsidyPolicy
from app.models.subsidy_tier import SubsidyTier
from app.models.user import User

__all__ = [
    "Allocation",
    "AuditLog",
    "AuthSession",
    "Base",
    "Booking",
    "BookingLine",
    "BookingMode",
    "BookingStatus",
    "Canteen",
    "CanteenSlot",
    "CanteenType",
    "Channel",
    "CharityHold",
    "DietTag",
    "District",
    "Donation",
    "DonationChannel",
    "DonationInvoiceRequest",
    "DonationLot",
    "DonationRefund",
    "DonationStatus",
    "DonationTarget",
    "DonationTargetKind",
    "DonorDigest",
    "Elder",
    "ElderCategory",
    "ElderInvite",
    "FamilyBinding",
    "FeedAggregate",
    "FeedEvent",
    "Fund",
    "FundPurpose",
    "HoldStatus",
    "IdempotencyKey",
    "JobOutbox",
    "JournalEntry",
    "JournalSeal",
    "LedgerAccount",
    "LedgerDigest",
    "MealNotification",
    "MealSlot",
    "Menu",
    "MenuItem",
    "PaymentInbox",
    "Posting",
    "ReceiptCounter",
    "ReconciliationDiscrepancy",
    "ReconciliationRun",
    "RefundStatus",
    "Role",
    "RoleGrant",
    "SandboxWeChatMessage",
    "SandboxWeChatPayOrder",
    "SandboxWeChatPayRefund",
    "Settlement",
    "SettlementLine",
    "SettlementStatus",
    "SlotDay",
    "StaffAccount",
    "StaffRole",
    "StaffSession",
    "StandingOrder",
    "StandingOrderRun",
    "SubscribeQuota",
    "SubsidyPolicy",
    "SubsidyTier",
    "UnsealedEntry",
    "User",
    "VerificationStatus",
]
