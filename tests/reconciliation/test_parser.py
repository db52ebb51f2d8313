"""The streaming trade-bill parser: exact yuan → fen, every refusal names its line, constant memory."""

from __future__ import annotations

import gzip
import hashlib
import io
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.kit.money import fen_to_yuan_text
from app.reconciliation.parser import BillError, BillReader, yuan_to_fen
from tests.reconciliation.helpers import BILL_DAY, Line, bill_bytes, bill_text, out_trade_no, txn_id


def _parse(data: bytes, **kwargs: object) -> tuple[list[tuple], BillReader]:
    reader = BillReader(io.BytesIO(data), **kwargs)  # type: ignore[arg-type]
    rows = [row for batch in reader.batches() for row in batch]
    return rows, reader


def _refused(data: bytes, **kwargs: object) -> BillError:
    with pytest.raises(BillError) as info:
        _parse(data, **kwargs)
    return info.value


def _lines(n: int) -> list[Line]:
    return [Line(out_trade_no(), 100 + i, txn_id()) for i in range(n)]


def test_gzip_and_plain_bills_give_the_same_rows_in_exact_fen() -> None:
    lines = [
        Line(out_trade_no(), 1, txn_id()),
        Line(out_trade_no(), 123456, txn_id()),
        Line(out_trade_no(), 10, txn_id()),
    ]
    lines.append(
        Line(lines[1].out_trade_no, 2345, lines[1].transaction_id, state="REFUND", out_refund_no="RF1")
    )
    plain = bill_bytes(lines)
    rows, reader = _parse(plain)
    gz_rows, gz_reader = _parse(bill_bytes(lines, gz=True))
    assert rows == gz_rows
    assert [(r[1], r[4], r[7]) for r in rows] == [
        ("payment", lines[0].out_trade_no, 1),
        ("payment", lines[1].out_trade_no, 123456),
        ("payment", lines[2].out_trade_no, 10),
        ("refund", lines[1].out_trade_no, 2345),
    ]
    assert rows[3][6] == "RF1"
    t = reader.result.totals
    assert (t.rows, t.payment_rows, t.refund_rows, t.settled_fen, t.refund_fen) == (4, 3, 1, 123467, 2345)
    assert t.fee_fen == 0 + 741 + 0 - 14
    # WeChat's SHA1 is over the uncompressed file, whichever way it was served
    assert reader.result.sha1 == gz_reader.result.sha1 == hashlib.sha1(plain).hexdigest()
    assert reader.result.bill_date == BILL_DAY


@given(st.integers(min_value=0, max_value=10**13))
def test_yuan_text_round_trips_to_the_same_fen(fen: int) -> None:
    assert yuan_to_fen(fen_to_yuan_text(fen), line=2, column="订单金额") == fen


@pytest.mark.parametrize("text", ["1.005", "0.001", "12.3456"])
def test_three_decimals_are_refused_naming_the_line(text: str) -> None:
    data = bill_text(_lines(3)).replace("`1.01,", "`" + text + ",", 1).encode()
    err = _refused(data)
    assert err.code == "BillAmountPrecision" and err.line == 3
    assert "第 3 行" in err.message and text in err.message


@pytest.mark.parametrize("text", ["abc", "1,00", "", "1e3", "-5.00"])
def test_a_field_that_is_not_an_amount_is_refused(text: str) -> None:
    data = bill_text(_lines(2)).replace("`1.00,", "`" + text + ",", 1).encode()
    err = _refused(data)
    assert err.code == "BillMalformed" and err.line == 2


def test_wrong_header_is_refused_on_line_one() -> None:
    err = _refused(bill_bytes(_lines(2), header="交易时间,商户号,订单金额"))
    assert (err.code, err.line) == ("BillWrongHeader", 1)
    assert _refused(b"").code == "BillEmpty"
    assert _refused("总交易单数,应结订单总金额\r\n".encode()).code == "BillWrongHeader"


def test_summary_that_disagrees_with_the_rows_is_refused() -> None:
    lines = _lines(3)
    ok = bill_text(lines)
    err = _refused(bill_bytes(lines, summary=["3", "3.04", "0.00", "0.00", "0.03", "3.03", "0.00"]))
    assert err.code == "BillSummaryMismatch" and err.line == 6
    assert "应结订单总金额" in err.message
    err = _refused(bill_bytes(lines, summary=["4", "3.03", "0.00", "0.00", "0.03", "3.03", "0.00"]))
    assert "总交易单数" in err.message
    assert _parse(ok.encode())[1].result.totals.rows == 3


def test_truncated_files_are_refused() -> None:
    full = bill_bytes(_lines(500), gz=True)
    assert _refused(full[: len(full) // 2]).code == "BillTruncated"
    assert _refused(full[:-4]).code == "BillTruncated"  # only the gzip trailer is missing
    plain = bill_text(_lines(3))
    cut = plain[: plain.index("总交易单数")]  # the summary never arrived
    assert _refused(cut.encode()).code == "BillTruncated"


def test_hash_mismatch_is_refused() -> None:
    data = bill_bytes(_lines(3), gz=True)
    good = hashlib.sha1(gzip.decompress(data)).hexdigest()
    _parse(data, expected_sha1=good.upper())
    err = _refused(data, expected_sha1="0" * 40)
    assert err.code == "BillHashMismatch" and good in err.message


def test_row_shape_and_date_problems_name_the_line() -> None:
    text = bill_text(_lines(3))
    lines = text.split("\r\n")
    lines[2] = lines[2].rsplit(",", 2)[0]  # two columns short
    err = _refused("\r\n".join(lines).encode())
    assert err.line == 3 and "27 列" in err.message
    other_day = [Line(out_trade_no(), 100, txn_id()), Line(out_trade_no(), 100, txn_id())]
    other_day[1].at = None
    data = bill_text(other_day).replace(BILL_DAY.isoformat(), (BILL_DAY + timedelta(days=1)).isoformat(), 1)
    err = _refused(data.encode())
    assert err.code == "BillWrongDate" and err.line == 3
    err = _refused(bill_bytes(_lines(2)), bill_date=BILL_DAY - timedelta(days=1))
    assert err.code == "BillWrongDate" and err.line == 2
    extra = bill_text(_lines(1)) + "`garbage\r\n"
    assert _refused(extra.encode()).line == 5
    assert _refused(b"\xff\xfe" + bill_bytes(_lines(1))).code in ("BillMalformed", "BillWrongHeader")


class _CountingStream(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        self.consumed += len(chunk)
        return len(chunk)


def test_rows_come_out_in_batches_before_the_file_is_read() -> None:
    data = bill_bytes(_lines(20_000))
    stream = _CountingStream(data)
    reader = BillReader(stream, batch_size=1000)  # type: ignore[arg-type]
    batches = reader.batches()
    first = next(batches)
    assert len(first) == 1000
    assert stream.consumed < len(data) // 5  # streaming: most of the file is still unread
    assert sum(len(b) for b in batches) == 19_000
    assert reader.result.totals.rows == 20_000
