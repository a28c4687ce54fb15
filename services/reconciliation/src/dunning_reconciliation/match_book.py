"""The open invoices a batch of payments may pay (matching's `Book`): indexed by what names them
(number, external id, creditor reference), by customer, name and balance; balances drop as the
batch's lines are decided."""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from difflib import SequenceMatcher

from dunning_reconciliation.domain import Allocation
from dunning_reconciliation.match_references import compact, normalise_token


@dataclass
class OpenInvoice:
    """An open invoice a payment may pay (balance: open, as this batch has left it)."""

    invoice_id: str
    number: str
    external_id: str
    currency: str
    balance: Decimal
    due_date: date | None = None
    customer_id: str | None = None
    customer_name: str | None = None

    def age_key(self) -> tuple:
        return (self.due_date or date.max, self.number, self.invoice_id)


DIGIT_RUN = re.compile(r"[0-9]{3,}")
_WORD = re.compile(r"[^\W_]{3,}")
# Words of a name that say nothing about who pays (legal forms, fillers).
NAME_NOISE = frozenset("gmbh mbh ltd llc inc corp co kg ag sa sas sarl bv nv plc limited und and the".split())


def name_words(name: str | None) -> set[str]:
    """The words of a name that tell who it is: 3+ letters, case-folded, not a legal form."""
    return {w for w in _WORD.findall((name or "").casefold()) if w not in NAME_NOISE and not w.isdigit()}


def normalise_name(name: str | None) -> str:
    """A name as compared: case-folded, whitespace collapsed."""
    return " ".join((name or "").casefold().split())


@dataclass
class Book:
    """The open invoices a batch may pay, indexed by what names them, and the payer accounts known.
    `consume` lowers balances as lines are decided; an invoice at zero is no longer a candidate."""

    invoices: dict[str, OpenInvoice] = field(default_factory=dict)
    payer_accounts: dict[str, str] = field(default_factory=dict)  # account -> customer_id
    _by_key: dict[str, set[str]] = field(default_factory=dict)
    _by_rf: dict[str, set[str]] = field(default_factory=dict)
    _by_customer: dict[str, list[str]] = field(default_factory=dict)  # ids, oldest due first once asked
    _unsorted: set[str] = field(default_factory=set)  # customers with an invoice added since their last sort
    _by_name: dict[str, set[str]] = field(default_factory=dict)
    _by_amount: dict[tuple[str, Decimal], list[str]] | None = None  # balance -> ids (built when asked)
    _by_word: dict[str, set[str]] = field(default_factory=dict)  # a word of a name -> the names
    _by_digits: dict[str, set[str]] | None = None  # a run of 3+ digits -> the keys (built when asked)
    _names: dict[str, str] = field(default_factory=dict)  # a customer name as given -> normalised

    @classmethod
    def of(cls, invoices: Iterable[OpenInvoice], payer_accounts: dict[str, str] | None = None) -> "Book":
        book = cls(payer_accounts=dict(payer_accounts or {}))
        for invoice in invoices:
            book.add(invoice)
        return book

    def add(self, inv: OpenInvoice, *, by_keys: bool = True) -> None:
        """Index one invoice. `by_keys=False`: not by its number and external id (the caller has
        every invoice a batch's references name in the book already)."""
        invoice_id = inv.invoice_id
        if invoice_id in self.invoices:
            return
        self.invoices[invoice_id] = inv
        if self._by_amount is not None:
            self._by_amount.setdefault((inv.currency, inv.balance), []).append(invoice_id)
        if by_keys:
            for key in {normalise_token(inv.number), normalise_token(inv.external_id)}:
                if key:
                    self._by_key.setdefault(key, set()).add(invoice_id)
                    if self._by_digits is not None:
                        for run in DIGIT_RUN.findall(key):
                            self._by_digits.setdefault(run, set()).add(key)
            if body := compact(inv.number):  # a valid RF reference with this body is the invoice's
                self._by_rf.setdefault(body, set()).add(invoice_id)
        if inv.customer_id:
            self._by_customer.setdefault(inv.customer_id, []).append(invoice_id)
            self._unsorted.add(inv.customer_id)
            if name := self._name(inv.customer_name):
                if name not in self._by_name:
                    for word in name_words(name):
                        self._by_word.setdefault(word, set()).add(name)
                self._by_name.setdefault(name, set()).add(inv.customer_id)

    def _name(self, raw: str | None) -> str:
        """normalise_name, once per distinct name (a customer's invoices repeat it)."""
        if (name := self._names.get(raw or "")) is None:
            name = self._names[raw or ""] = normalise_name(raw)
        return name

    def open(self, invoice_ids: Iterable[str], currency: str) -> list[OpenInvoice]:
        """The invoices still open in `currency`, oldest due first."""
        found = (self.invoices[i] for i in set(invoice_ids))
        return sorted((i for i in found if i.currency == currency and i.balance > 0), key=OpenInvoice.age_key)

    def any_open(self, invoice_ids: Iterable[str], currency: str) -> bool:
        """`bool(self.open(invoice_ids, currency))`, without sorting them."""
        invoices = self.invoices
        return any((i := invoices[n]).currency == currency and i.balance > 0 for n in invoice_ids)

    def named_by_key(self, token: str) -> set[str]:
        return self._by_key.get(token, set())

    def named_by_rf(self, reference: str) -> set[str]:
        """The invoices a valid RF reference names (its body: the number's alphanumerics)."""
        return self._by_rf.get(reference[4:], set())

    def of_customer(self, customer_id: str, currency: str) -> list[OpenInvoice]:
        """`open` of the customer's invoices: its list is kept in age order (sorted again only after an
        invoice was added), so each call filters instead of sorting (a statement asks once a line)."""
        ids = self._by_customer.get(customer_id)
        if not ids:
            return []
        if customer_id in self._unsorted:
            ids.sort(key=lambda i: self.invoices[i].age_key())
            self._unsorted.discard(customer_id)
        found = (self.invoices[i] for i in ids)
        return [i for i in found if i.currency == currency and i.balance > 0]

    def customers_named(self, name: str | None) -> set[str]:
        return self._by_name.get(normalise_name(name), set()) if name else set()

    def customers_like(self, name: str | None, at_least: float = 0.5) -> set[str]:
        """Customers whose name shares a word with `name` and is like it (difflib ratio), the equal
        ones included."""
        payer = normalise_name(name)
        if not payer:
            return set()
        found: set[str] = set(self._by_name.get(payer, ()))
        for known in set().union(*(self._by_word.get(w, ()) for w in name_words(payer))):
            if SequenceMatcher(None, payer, known).ratio() >= at_least:
                found |= self._by_name[known]
        return found

    def keys_like(self, tokens: Sequence[str]) -> set[str]:
        """Invoice numbers / external ids that share a run of 3+ digits with a token ("1001" in the
        remittance, "INV-1001" the number)."""
        if self._by_digits is None:
            self._by_digits = {}
            for key in self._by_key:
                for run in DIGIT_RUN.findall(key):
                    self._by_digits.setdefault(run, set()).add(key)
        return set().union(*(self._by_digits.get(run, ()) for t in tokens for run in DIGIT_RUN.findall(t)))

    def with_amount(self, currency: str, amount: Decimal) -> list[OpenInvoice]:
        """The open invoices whose balance is `amount` (indexed at the first call: for suggestions,
        after a batch's decisions)."""
        if self._by_amount is None:
            self._by_amount = {}
            for inv in self.invoices.values():
                self._by_amount.setdefault((inv.currency, inv.balance), []).append(inv.invoice_id)
        return [i for i in self.open(self._by_amount.get((currency, amount), ()), currency) if i.balance == amount]

    def consume(self, allocations: Iterable[Allocation]) -> None:
        for a in allocations:
            inv = self.invoices.get(a.invoice_id)
            if inv is not None:
                inv.balance = max(inv.balance - a.amount, Decimal(0))

    def set_balance(self, invoice_id: str, balance: Decimal) -> None:
        if (inv := self.invoices.get(invoice_id)) is not None:
            inv.balance = balance
