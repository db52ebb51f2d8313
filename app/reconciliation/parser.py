"""Streaming parser for the WeChat Pay APIv3 trade bill (``bill_type=ALL``).

The file has four parts: the detail header, detail rows with every field prefixed by a backtick, the summary
header and one summary row. Amounts are yuan with at most two decimals and become integer fen exactly
(``Decimal``). The file is read once, in constant memory: rows come out in batches of tuples (ready for COPY),
the SHA1 of the uncompressed bytes is computed on the way, and the summary block is checked against the rows
when the end is reached. Any problem raises :class:`BillError` naming the line; the caller stores nothing.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import IO, Any

from app.kit.money import fen_to_yuan_text

HEADER = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
]
SUMMARY_HEADER = [
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
]

# column positions in HEADER
_TIME, _TXN, _OUT_TRADE_NO, _STATE = 0, 5, 6, 9
_SETTLED, _REFUND_ID, _OUT_REFUND_NO, _REFUND, _COUPON_REFUND = 12, 14, 15, 16, 17
_FEE, _ORDER, _REQUESTED_REFUND = 22, 24, 25

# the columns of one parsed row, in this order (the reconciliation repository copies them as they are)
ROW_COLUMNS = (
    "line_no",
    "kind",
    "trade_state",
    "transaction_id",
    "out_trade_no",
    "refund_id",
    "out_refund_no",
    "amount_fen",
    "fee_fen",
)
BillRow = tuple[int, str, str, str | None, str, str | None, str | None, int, int]

_AMOUNT = re.compile(r"-?[0-9]{1,13}(?:\.[0-9]{1,2})?")
_TOO_PRECISE = re.compile(r"-?[0-9]+\.[0-9]{3,}")
_TIME_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]")
_STATE_TEXT = re.compile(r"[A-Z_]{2,24}")
_ID_TEXT = re.compile(r"[A-Za-z0-9_\-|*@]{1,64}")
_CACHE_LIMIT = 200_000  # distinct amount texts remembered (a bill repeats the same few amounts)


class BillError(Exception):
    """The bill is refused. ``code`` is the machine error code, ``line`` the 1-based line (if any)."""

    def __init__(self, message: str, *, code: str = "BillMalformed", line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.line = line


@dataclass
class BillTotals:
    rows: int = 0
    payment_rows: int = 0
    refund_rows: int = 0
    settled_fen: int = 0
    refund_fen: int = 0
    coupon_refund_fen: int = 0
    fee_fen: int = 0
    order_fen: int = 0
    requested_refund_fen: int = 0


@dataclass
class ParsedBill:
    """Filled in while :meth:`BillReader.batches` runs; complete once it is exhausted without error."""

    bill_date: date | None
    totals: BillTotals = field(default_factory=BillTotals)
    sha1: str = ""


def yuan_to_fen(text: str, *, line: int, column: str, allow_negative: bool = False) -> int:
    """Exact yuan → fen (``Decimal``); more than two decimals, a sign where none belongs, or anything else is
    refused naming the line and column."""
    if not _AMOUNT.fullmatch(text):
        if _TOO_PRECISE.fullmatch(text):
            raise BillError(
                f"第 {line} 行「{column}」的金额 {text} 超过两位小数，账单金额只能精确到分",
                code="BillAmountPrecision",
                line=line,
            )
        raise BillError(f"第 {line} 行「{column}」不是有效的金额：{text[:40]!r}", line=line)
    if text.startswith("-") and not allow_negative:
        raise BillError(f"第 {line} 行「{column}」不能是负数：{text}", line=line)
    return int(Decimal(text) * 100)


class _Amounts:
    """``yuan_to_fen`` with a bounded memo: a million-row bill has few distinct amount texts."""

    def __init__(self) -> None:
        self.known: dict[str, int] = {}

    def fen(self, text: str, line: int, column: str) -> int:
        value = self.known.get(text)
        if value is None:
            value = yuan_to_fen(text, line=line, column=column, allow_negative=True)
            if len(self.known) >= _CACHE_LIMIT:
                self.known.clear()
            self.known[text] = value
        return value


class _Prefixed(io.RawIOBase):
    """A binary stream with some already-read bytes put back in front."""

    def __init__(self, prefix: bytes, stream: IO[bytes]) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(view))
        n = len(data)
        view[:n] = data
        return n


class _Hashing(io.RawIOBase):
    """Passes bytes through and computes their SHA1 (WeChat's hash is over the uncompressed file)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.sha1 = hashlib.sha1()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._stream.read(len(view))
        n = len(data)
        view[:n] = data
        self.sha1.update(data)
        return n


def _open_text(stream: IO[bytes]) -> tuple[io.TextIOWrapper, _Hashing]:
    head = stream.read(2)
    raw: Any = _Prefixed(head, stream)
    if head == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    hashing = _Hashing(raw)
    buffered = io.BufferedReader(hashing, buffer_size=1 << 16)
    return io.TextIOWrapper(buffered, encoding="utf-8-sig", newline=""), hashing


class BillReader:
    """``for batch in reader.batches(): ...`` then read ``reader.result``.

    ``bill_date``: the date the caller expects; when None it is taken from the first row. Every row's trade
    time must fall on that date (Asia/Shanghai). ``expected_sha1``: when given, the uncompressed file must
    hash to it."""

    def __init__(
        self,
        stream: IO[bytes],
        *,
        bill_date: date | None = None,
        expected_sha1: str | None = None,
        batch_size: int = 5000,
    ) -> None:
        self._stream = stream
        self._expected_sha1 = expected_sha1.lower() if expected_sha1 else None
        self._batch_size = batch_size
        self.result = ParsedBill(bill_date=bill_date)

    def batches(self) -> Iterator[list[BillRow]]:
        text, hashing = _open_text(self._stream)
        # every detail field starts with a backtick (so Excel keeps long numbers); no value we use contains one
        reader = csv.reader(line.replace("`", "") for line in text)
        line = 0
        try:
            yield from self._read(reader)
            # drain anything csv did not need, so the hash covers the whole file
            while text.read(1 << 16):
                pass
        except csv.Error as exc:
            raise BillError(f"第 {reader.line_num} 行不是有效的 CSV：{exc}", line=reader.line_num) from exc
        except UnicodeDecodeError as exc:
            line = reader.line_num + 1
            raise BillError(f"第 {line} 行附近不是 UTF-8 编码的文本", line=line) from exc
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise BillError(
                "账单文件不完整或已损坏（gzip 解压失败），请重新下载", code="BillTruncated"
            ) from exc
        self.result.sha1 = hashing.sha1.hexdigest()
        if self._expected_sha1 is not None and self.result.sha1 != self._expected_sha1:
            raise BillError(
                f"账单文件的 SHA1（{self.result.sha1}）与微信支付给出的（{self._expected_sha1}）不一致，"
                "文件可能被篡改或下载不完整",
                code="BillHashMismatch",
            )

    def _read(self, reader: Any) -> Iterator[list[BillRow]]:
        header = next(reader, None)
        if header is None:
            raise BillError("账单文件是空的", code="BillEmpty", line=1)
        if [h.strip() for h in header] != HEADER:
            raise BillError(
                "第 1 行的表头不是微信支付交易账单（ALL）的格式：应为「交易时间,公众账号ID,…,费率备注」共 27 列",
                code="BillWrongHeader",
                line=1,
            )
        totals = self.result.totals
        batch: list[BillRow] = []
        append = batch.append
        batch_size = self._batch_size
        summary: list[str] | None = None
        summary_line = 0
        width = len(HEADER)
        amounts = _Amounts()
        fen = amounts.fen
        known = amounts.known
        time_ok = _TIME_TEXT.fullmatch
        id_ok = _ID_TEXT.fullmatch
        day_text = self.result.bill_date.isoformat() if self.result.bill_date else None
        rows = payments = refunds = 0
        settled_sum = refund_sum = coupon_sum = fee_sum = order_sum = requested_sum = 0
        for row in reader:
            if len(row) != width:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if summary is not None:
                    raise BillError(f"第 {line} 行：汇总行之后不应再有内容", line=line)
                if row[0].strip() == SUMMARY_HEADER[0]:
                    if [h.strip() for h in row] != SUMMARY_HEADER:
                        raise BillError(f"第 {line} 行的汇总表头格式不对", code="BillWrongHeader", line=line)
                    values = next(reader, None)
                    while values is not None and not any(v.strip() for v in values):
                        values = next(reader, None)
                    summary_line = reader.line_num
                    if values is None:
                        raise BillError(
                            f"第 {line} 行之后缺少汇总数据行，账单不完整", code="BillTruncated", line=line
                        )
                    summary = [v.strip() for v in values]
                    continue
                raise BillError(f"第 {line} 行应有 {width} 列，实际 {len(row)} 列", line=line)
            line = reader.line_num
            if summary is not None:
                raise BillError(f"第 {line} 行：汇总行之后不应再有内容", line=line)
            # backticks were removed from the line text before CSV splitting (see batches())
            (at, _, _, _, _, txn, out_trade_no, _, _, state, _, _, settled_t, coupon_t, refund_id, out_refund_no,
             refund_t, coupon_refund_t, _, _, _, _, fee_t, _, order_t, requested_t, _) = row  # fmt: skip
            if day_text is None:
                self._first_day(at, line)
                day_text = at[:10]
            if at[:10] != day_text or not time_ok(at):
                self._bad_time(at, line, day_text)
            if not out_trade_no or not id_ok(out_trade_no) or len(out_trade_no) > 32:
                raise BillError(f"第 {line} 行的商户订单号缺失或格式不对", line=line)
            if txn and (len(txn) > 32 or not txn.isdigit()):
                raise BillError(f"第 {line} 行的微信订单号格式不对", line=line)
            settled = known.get(settled_t)
            if settled is None or settled < 0:
                settled = self._non_negative(
                    fen(settled_t, line, "应结订单金额"), settled_t, line, "应结订单金额"
                )
            refund = known.get(refund_t)
            if refund is None or refund < 0:
                refund = self._non_negative(fen(refund_t, line, "退款金额"), refund_t, line, "退款金额")
            coupon_refund = known.get(coupon_refund_t)
            if coupon_refund is None or coupon_refund < 0:
                coupon_refund = self._non_negative(
                    fen(coupon_refund_t, line, "充值券退款金额"), coupon_refund_t, line, "充值券退款金额"
                )
            order = known.get(order_t)
            if order is None or order < 0:
                order = self._non_negative(fen(order_t, line, "订单金额"), order_t, line, "订单金额")
            requested = known.get(requested_t)
            if requested is None or requested < 0:
                requested = self._non_negative(
                    fen(requested_t, line, "申请退款金额"), requested_t, line, "申请退款金额"
                )
            coupon = known.get(coupon_t)
            if coupon is None or coupon < 0:
                self._non_negative(fen(coupon_t, line, "代金券金额"), coupon_t, line, "代金券金额")
            fee = known.get(fee_t)
            if fee is None:
                fee = fen(fee_t, line, "手续费")
            rows += 1
            settled_sum += settled
            refund_sum += refund
            coupon_sum += coupon_refund
            fee_sum += fee
            order_sum += order
            requested_sum += requested
            if state == "SUCCESS":
                if not txn:
                    raise BillError(f"第 {line} 行是支付成功，但缺少微信订单号", line=line)
                payments += 1
                append((line, "payment", state, txn, out_trade_no, None, None, order, fee))
            elif state == "REFUND":
                if not out_refund_no or len(out_refund_no) > 64 or not id_ok(out_refund_no):
                    raise BillError(f"第 {line} 行是退款，但商户退款单号缺失或格式不对", line=line)
                if len(refund_id) > 32:
                    raise BillError(f"第 {line} 行的微信退款单号格式不对", line=line)
                refunds += 1
                append((line, "refund", state, txn or None, out_trade_no, refund_id or None, out_refund_no,
                        refund, fee))  # fmt: skip
            else:
                if not _STATE_TEXT.fullmatch(state):
                    raise BillError(f"第 {line} 行的交易状态不对：{state[:30]!r}", line=line)
                append((line, "other", state, txn or None, out_trade_no, None, None, order, fee))
            if len(batch) >= batch_size:
                yield batch
                batch = []
                append = batch.append
        if batch:
            yield batch
        totals.rows, totals.payment_rows, totals.refund_rows = rows, payments, refunds
        totals.settled_fen, totals.refund_fen, totals.coupon_refund_fen = settled_sum, refund_sum, coupon_sum
        totals.fee_fen, totals.order_fen, totals.requested_refund_fen = fee_sum, order_sum, requested_sum
        if summary is None:
            raise BillError(
                f"账单在第 {reader.line_num} 行后结束，缺少汇总行，文件不完整",
                code="BillTruncated",
                line=reader.line_num,
            )
        self._check_summary(summary, summary_line, totals)

    @staticmethod
    def _non_negative(value: int, text: str, line: int, column: str) -> int:
        if value < 0:
            raise BillError(f"第 {line} 行「{column}」不能是负数：{text}", line=line)
        return value

    def _first_day(self, at: str, line: int) -> None:
        if not _TIME_TEXT.fullmatch(at):
            raise BillError(f"第 {line} 行的交易时间格式不对：{at[:30]!r}", line=line)
        try:
            self.result.bill_date = date.fromisoformat(at[:10])
        except ValueError as exc:
            raise BillError(f"第 {line} 行的交易时间不存在：{at}", line=line) from exc

    def _bad_time(self, at: str, line: int, day_text: str) -> None:
        if not _TIME_TEXT.fullmatch(at):
            raise BillError(f"第 {line} 行的交易时间格式不对：{at[:30]!r}", line=line)
        raise BillError(
            f"第 {line} 行的交易时间 {at} 不在账单日期 {day_text} 内", code="BillWrongDate", line=line
        )

    def _check_summary(self, summary: list[str], line: int, t: BillTotals) -> None:
        if len(summary) != len(SUMMARY_HEADER):
            raise BillError(
                f"第 {line} 行的汇总数据应有 {len(SUMMARY_HEADER)} 列，实际 {len(summary)} 列", line=line
            )
        if not summary[0].isdigit():
            raise BillError(f"第 {line} 行的总交易单数不是整数：{summary[0][:20]!r}", line=line)
        amounts = [
            yuan_to_fen(v, line=line, column=name, allow_negative=name == "手续费总金额")
            for name, v in zip(SUMMARY_HEADER[1:], summary[1:], strict=True)
        ]
        expected = [
            t.settled_fen,
            t.refund_fen,
            t.coupon_refund_fen,
            t.fee_fen,
            t.order_fen,
            t.requested_refund_fen,
        ]
        problems = []
        if int(summary[0]) != t.rows:
            problems.append(f"总交易单数写的是 {int(summary[0])}，明细有 {t.rows} 行")
        for name, stated, actual in zip(SUMMARY_HEADER[1:], amounts, expected, strict=True):
            if stated != actual:
                problems.append(
                    f"{name}写的是 {fen_to_yuan_text(stated)} 元，明细合计 {fen_to_yuan_text(actual)} 元"
                )
        if problems:
            raise BillError(
                f"第 {line} 行的汇总与明细不符：" + "；".join(problems),
                code="BillSummaryMismatch",
                line=line,
            )
