"""Rows into invoices into batches (line items merged, skipped rows counted, no invoice split across
batches), the state and errors files that make an import resumable, the progress line, and the
Retry-After the client honours."""

import io

import pytest

from dunning_cli.import_client import retry_after
from dunning_cli.import_mapping import FIELDS, parse_mapping, resolve
from dunning_cli.import_progress import Progress, duration
from dunning_cli.import_state import ErrorsFile, State, load_state, save_state
from dunning_cli.importer import _field_name, batches, units

pytestmark = pytest.mark.unit


def record(ext: str, **changes: str) -> dict[str, str]:
    row = {
        "external_id": ext,
        "number": ext.upper(),
        "customer_external_id": "c1",
        "customer_name": "Acme",
        "customer_email": "ap@acme.de",
        "customer_locale": "en-GB",
        "customer_timezone": "Europe/London",
        "currency": "EUR",
        "amount_due": "10.00",
        "issue_date": "2026-11-02",
        "due_date": "2026-11-16",
        "status": "open",
    }
    return {**row, **changes}


def plan(**mapping):
    return resolve(parse_mapping(mapping), [*FIELDS, "status"])


def test_line_items_of_one_invoice_are_one_invoice_with_its_first_rows_values():
    rows = [
        (2, record("a")),
        (3, record("a", amount_due="999")),
        (4, record("b")),
        (5, record("a")),  # not consecutive: another invoice with the same id (the server decides)
    ]
    got = list(units(plan(line_items=True), rows))
    assert [(u.row, u.rows, u.external_id) for u in got] == [(2, 2, "a"), (4, 1, "b"), (5, 1, "a")]
    assert got[0].invoice is not None and got[0].invoice["amount_due"] == "10.00"
    assert [u.rows for u in units(plan(), rows)] == [1, 1, 1, 1]  # without line_items every row counts


def test_skipped_and_unreadable_rows_are_units_that_send_nothing():
    rows = [(2, record("a", status="paid")), (3, {"\x00line": "not JSON"}), (4, record("b", due_date="soon"))]
    got = list(units(plan(skip_if={"status": ["paid"]}), rows))
    assert got[0].skipped and got[0].invoice is None
    assert got[1].errors[0].code == "unreadable"
    assert got[2].invoice is None and got[2].errors[0].column == "due_date"


def test_a_batch_holds_at_most_batch_size_invoices_and_never_splits_an_invoices_lines():
    rows = [(i + 2, record(f"in_{i // 3}")) for i in range(30)]  # 10 invoices of 3 lines
    got = list(batches(units(plan(line_items=True), rows), 4))
    assert [sum(u.invoice is not None for u in b) for b in got] == [4, 4, 2]
    assert [sum(u.rows for u in b) for b in got] == [12, 12, 6]


def test_the_state_file_is_replaced_whole_and_an_unreadable_one_means_start_over(tmp_path):
    path = tmp_path / "in.csv.import-state.json"
    assert load_state(path) is None
    state = State("abc", "map", 10, rows_done=4, counts={"created": 3, "rejected": 1})
    save_state(path, state)
    assert load_state(path) == state
    assert state.same_import(State("abc", "map", 10)) and not state.same_import(State("abd", "map", 10))
    path.write_text("{half")
    assert load_state(path) is None


def test_the_errors_file_appends_across_resumes_without_duplicates(tmp_path):
    path = tmp_path / "in.csv.errors.csv"
    first = ErrorsFile(path, fresh=True)
    first.add(3, "in_2", "Due", "date_format", "bad date")
    first.close()
    again = ErrorsFile(path, fresh=False)  # the batch was sent again after a kill
    again.add(3, "in_2", "Due", "date_format", "bad date")
    again.add(9, "in_8", "Amount", "amount_format", "bad, amount")
    again.close()
    assert path.read_text().splitlines() == [
        "row,external_id,column,code,message",
        "3,in_2,Due,date_format,bad date",
        '9,in_8,Amount,amount_format,"bad, amount"',
    ]
    ErrorsFile(path, fresh=True).close()  # --restart, or another file: a new errors file
    assert path.read_text().splitlines() == ["row,external_id,column,code,message"]


@pytest.mark.parametrize(
    "field, expected",
    [
        pytest.param("invoices.3.customer.email", "customer_email", id="customer"),
        pytest.param("invoices.12.amount_due", "amount_due", id="top-level"),
        pytest.param("invoices.0.metadata.po", "metadata.po", id="metadata"),
        pytest.param("invoices.0.external_id", "external_id", id="conflict"),
    ],
)
def test_a_server_error_field_maps_back_to_our_field_name(field, expected):
    assert _field_name(field) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_the_progress_is_one_line_rewritten_with_rate_and_eta():
    out, clock = io.StringIO(), Clock()
    progress = Progress(1000, stream=out, tty=True, clock=clock)
    clock.now += 2
    progress.update(200, {"created": 150, "updated": 20, "existing": 20, "rejected": 10})
    clock.now += 0.01
    progress.update(210, {})  # too soon: not shown
    clock.now += 2
    progress.finish(1000, {"created": 990, "rejected": 10})
    lines = out.getvalue().split("\r")
    assert lines[1].startswith(
        "[####................]  20.0% 200/1000 rows | created 150 updated 20 existing 20 "
        "rejected 10 | 100 rows/s | ETA 8s"
    )
    assert "100.0% 1000/1000 rows" in lines[2] and lines[2].rstrip(" \n").endswith("ETA --")
    assert len(lines) == 3


def test_without_a_terminal_the_progress_is_a_line_every_few_seconds():
    out, clock = io.StringIO(), Clock()
    progress = Progress(100, start_at=50, stream=out, tty=False, clock=clock)
    for _ in range(10):
        clock.now += 1
        progress.update(60, {})
    assert out.getvalue().count("\n") == 2  # at 1 s and at 6 s
    assert "60/100 rows" in out.getvalue() and "[" not in out.getvalue()


@pytest.mark.parametrize(
    "seconds, text", [(5, "5s"), (65, "1m05s"), (3 * 3600 + 120, "3h02m")], ids=["seconds", "minutes", "hours"]
)
def test_durations_read_like_a_clock(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize(
    "header, expected",
    [
        pytest.param(None, None, id="absent"),
        pytest.param("3", 3.0, id="seconds"),
        pytest.param("9999", 300.0, id="capped"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("soon", None, id="garbage"),
    ],
)
def test_retry_after_is_honoured_in_seconds_or_as_a_date(header, expected):
    assert retry_after(header) == expected
