"""Matching a payment that names no invoice by key (a bank line, a processor's payment with only a
remittance text) to the open invoices it pays: pure rules, no I/O (match_service.py loads and applies).

In order, the first rule that finds something decides, and its reason is recorded in words:

1. `creditor_reference` — an ISO 11649 creditor reference (`RF…`, mod-97 checked) in the structured
   reference or the remittance equals an invoice's (`creditor_reference_for(number)`), or the
   structured reference equals an invoice's number or external id;
2. `reference` — invoice numbers / external ids found in the remittance text (token equality after
   normalisation; a token naming two invoices is ambiguous and ignored); several: allocated across
   them oldest due first, each up to its open balance;
3. `payer_account_amount` — the payer's account is known (payer_accounts) → its customer's oldest open
   invoice with exactly the amount, else `customer_sum`: an exact sum of several of its oldest open
   invoices (bounded subset search);
4. `customer_amount` — the processor's customer id, or the payer's name equal to exactly one customer's
   name (case-insensitive) → the same exact amount / `customer_sum` search.

Otherwise the payment waits in the queue with up to five ranked suggestions. Only open invoices in the
payment's currency are ever candidates; `Book` keeps a batch's open balances so two lines of one
statement cannot both take the same open amount.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from difflib import SequenceMatcher

from dunning.money import format_amount
from dunning_reconciliation.domain import Allocation, IncomingPayment

# An RF reference is at most 25 characters: RF, two check digits, up to 21 alphanumerics.
_RF_MAX_BODY = 21
_RF_START = re.compile(r"^RF[0-9]{2}[0-9A-Z]{0,21}$")
_ALNUM = re.compile(r"^[0-9A-Z]+$")
_SPLIT = re.compile(r"[\s,;]+")
_TRIM = ".:()[]{}<>\"'#"
SUM_SEARCH_LIMIT = 12  # the oldest open invoices a customer_sum search looks at (2**12 subsets at most)
MAX_SUGGESTIONS = 5


# --- references -------------------------------------------------------------------------------------


def _mod97(text: str) -> int:
    """ISO 7064 mod 97-10 of alphanumerics, letters as 10..35 (as IBAN does)."""
    remainder = 0
    for char in text:
        for digit in str(int(char, 36)):
            remainder = (remainder * 10 + int(digit)) % 97
    return remainder


def is_creditor_reference(reference: str) -> bool:
    """A valid ISO 11649 reference in compact form (upper case, no spaces): RF, check digits, body."""
    if not _RF_START.fullmatch(reference) or len(reference) < 5:
        return False
    return _mod97(reference[4:] + reference[:4]) == 1


_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]+")


def compact(text: str) -> str:
    """A reference in compact form: its ASCII alphanumerics only, upper case."""
    return _NOT_ALNUM.sub("", text).upper()


def creditor_reference_for(number: str) -> str | None:
    """The ISO 11649 creditor reference an invoice is paid with: RF, check digits, then the invoice
    number's alphanumerics upper-cased ("INV-1001" → "RF45INV1001"). None when the number has no
    alphanumerics or more than 21 of them (an RF reference cannot carry it)."""
    body = compact(number)
    if not body or len(body) > _RF_MAX_BODY:
        return None
    check = 98 - _mod97(body + "RF00")
    return f"RF{check:02d}{body}"


def normalise_token(token: str) -> str:
    """How an invoice number / external id is compared with a remittance's token: upper case, stripped
    of surrounding punctuation."""
    return token.strip(_TRIM).strip().upper()


@dataclass(frozen=True)
class References:
    """What a remittance text names: valid creditor references (compact) and candidate tokens."""

    creditor_references: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()


def _creditor_references(words: list[str]) -> tuple[list[str], set[int]]:
    """RF references among the words, in print form ("RF18 5390 0754 7034") or compact: the longest
    run of words from an RF word that validates; and the positions of the words they took."""
    found: list[str] = []
    taken: set[int] = set()
    for i, word in enumerate(words):
        head = word.upper().strip(_TRIM)
        if not (head.startswith("RF") and len(head) >= 4 and head[2:4].isdigit()):
            continue
        run = [head]
        for nxt in words[i + 1 : i + 7]:
            part = nxt.upper().strip(_TRIM)
            if not _ALNUM.fullmatch(part) or len("".join(run)) + len(part) > 4 + _RF_MAX_BODY:
                break
            run.append(part)
        for end in range(len(run), 0, -1):
            candidate = "".join(run[:end])
            if is_creditor_reference(candidate):
                found.append(candidate)
                taken.update(range(i, i + end))
                break
    return found, taken


def references_in(text: str | None) -> References:
    """The creditor references (ISO 11649, mod-97 checked; an invalid RF is not one) and the candidate
    invoice-number tokens of a remittance text. Tokens are split on whitespace, commas and semicolons,
    trimmed of punctuation and upper-cased; a token with slashes ("2026/0042") is kept whole and its
    parts are kept too. The words of a valid RF reference are not tokens."""
    if not text:
        return References()
    words = [w for w in _SPLIT.split(text) if w]
    refs, taken = _creditor_references(words)
    tokens: dict[str, None] = {}
    for n, word in enumerate(words):
        token = normalise_token(word) if n not in taken else ""
        if not token:
            continue
        tokens.setdefault(token, None)
        if "/" in token:
            for part in token.split("/"):
                if part := normalise_token(part):
                    tokens.setdefault(part, None)
    return References(tuple(dict.fromkeys(refs)), tuple(tokens))


# --- the open invoices of a batch ---------------------------------------------------------------------


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


_DIGITS = re.compile(r"[0-9]{3,}")
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
    _by_customer: dict[str, list[str]] = field(default_factory=dict)
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
                        for run in _DIGITS.findall(key):
                            self._by_digits.setdefault(run, set()).add(key)
            if body := compact(inv.number):  # a valid RF reference with this body is the invoice's
                self._by_rf.setdefault(body, set()).add(invoice_id)
        if inv.customer_id:
            self._by_customer.setdefault(inv.customer_id, []).append(invoice_id)
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

    def named_by_key(self, token: str) -> set[str]:
        return self._by_key.get(token, set())

    def named_by_rf(self, reference: str) -> set[str]:
        """The invoices a valid RF reference names (its body: the number's alphanumerics)."""
        return self._by_rf.get(reference[4:], set())

    def of_customer(self, customer_id: str, currency: str) -> list[OpenInvoice]:
        return self.open(self._by_customer.get(customer_id, ()), currency)

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
                for run in _DIGITS.findall(key):
                    self._by_digits.setdefault(run, set()).add(key)
        return set().union(*(self._by_digits.get(run, ()) for t in tokens for run in _DIGITS.findall(t)))

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


# --- the decision ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Which rule matched and why (rule None: nothing did, `suggestions` for the queue)."""

    rule: str | None
    reason: str
    allocations: tuple[Allocation, ...] = ()
    suggestions: tuple[dict, ...] = ()


def _labels(invoices: Sequence[OpenInvoice]) -> str:
    names = [i.number for i in invoices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def spread(amount: Decimal, invoices: Sequence[OpenInvoice], rule: str, reason: str) -> tuple[Allocation, ...]:
    """The amount across the invoices in the order given, each up to its open balance; what is left
    over is not allocated (the excess), and a short amount leaves the last invoice partly open."""
    out: list[Allocation] = []
    left = amount
    for inv in invoices:
        if left <= 0:
            break
        part = min(left, inv.balance)
        out.append(Allocation(inv.invoice_id, part, rule, reason))
        left -= part
    return tuple(out)


def _unique_named(book: Book, keys: Iterable[str], lookup) -> set[str]:
    """Invoices named by keys, each key naming exactly one invoice (a key naming two is ambiguous)."""
    found: set[str] = set()
    for key in keys:
        named = lookup(key)
        if len(named) == 1:
            found |= named
    return found


def exact_sum(amount: Decimal, invoices: Sequence[OpenInvoice], limit: int = SUM_SEARCH_LIMIT) -> list[OpenInvoice]:
    """Two or more of the oldest `limit` invoices whose balances add up to exactly `amount`, preferring
    the oldest (depth first, taking an invoice before leaving it out); [] if none."""
    pool = list(invoices[:limit])
    chosen: list[OpenInvoice] = []

    def search(start: int, left: Decimal) -> bool:
        if left == 0:
            return len(chosen) >= 2
        for i in range(start, len(pool)):
            if pool[i].balance <= left:
                chosen.append(pool[i])
                if search(i + 1, left - pool[i].balance):
                    return True
                chosen.pop()
        return False

    return chosen if search(0, amount) else []


def _by_amount(p: IncomingPayment, invoices: list[OpenInvoice], single_rule: str, who: str) -> Decision | None:
    amount = format_amount(p.amount, p.currency)
    for inv in invoices:
        if inv.balance == p.amount:
            reason = f"{who}; {inv.number} is open for exactly {amount} {p.currency}"
            return Decision(single_rule, reason, (Allocation(inv.invoice_id, p.amount, single_rule, reason),))
    if several := exact_sum(p.amount, invoices):
        reason = f"{who}; {_labels(several)} add up to exactly {amount} {p.currency}"
        return Decision("customer_sum", reason, spread(p.amount, several, "customer_sum", reason))
    return None


def by_reference(p: IncomingPayment, book: Book, refs: References) -> Decision | None:
    """Rules 1 and 2: the open invoices p's creditor reference, or else its remittance, names."""
    structured = compact(p.creditor_reference or "")
    rfs = [r for r in (structured, *refs.creditor_references) if r and is_creditor_reference(r)]
    named = _unique_named(book, rfs, book.named_by_rf)
    if structured and not is_creditor_reference(structured):
        named |= _unique_named(book, [normalise_token(p.creditor_reference or "")], book.named_by_key)
    if invoices := book.open(named, p.currency):
        reason = f"creditor reference names {_labels(invoices)}"
        return Decision("creditor_reference", reason, spread(p.amount, invoices, "creditor_reference", reason))

    if invoices := book.open(_unique_named(book, refs.tokens, book.named_by_key), p.currency):
        reason = f"{_labels(invoices)} named in the remittance"
        return Decision("reference", reason, spread(p.amount, invoices, "reference", reason))
    return None


def decide(p: IncomingPayment, book: Book, refs: References | None = None, *, suggestions: bool = True) -> Decision:
    """The rule that matches p against the book's open invoices, in the module's order (no match:
    with its suggestions unless `suggestions` is false)."""
    refs = refs if refs is not None else references_in(p.remittance)
    if found := by_reference(p, book, refs):
        return found

    if p.payer_account and (customer := book.payer_accounts.get(p.payer_account)):
        who = f"payer account {p.payer_account} is customer {customer}'s"
        if found := _by_amount(p, book.of_customer(customer, p.currency), "payer_account_amount", who):
            return found

    customers = {p.customer_id} if p.customer_id else book.customers_named(p.payer_name)
    if len(customers) == 1:
        customer = next(iter(customers))
        who = f"customer {customer}" if p.customer_id else f"payer name {p.payer_name!r} is customer {customer}'s"
        if found := _by_amount(p, book.of_customer(customer, p.currency), "customer_amount", who):
            return found

    return Decision(None, "no confident match", suggestions=tuple(suggest(p, book, refs) if suggestions else ()))


# --- suggestions for the queue ------------------------------------------------------------------------


def _partial_reference(tokens: Sequence[str], inv: OpenInvoice) -> str | None:
    """A remittance token that shares a run of 3+ digits with the invoice's number / external id."""
    runs = {r for k in (inv.number, inv.external_id) for r in _DIGITS.findall(normalise_token(k))}
    return next((t for t in tokens if runs.intersection(_DIGITS.findall(t))), None)


def suggest(p: IncomingPayment, book: Book, refs: References) -> list[dict]:
    """Up to five open invoices in p's currency worth a person's look, best first. Scored: the amount
    equal (0.5), the payer's name like the customer's (up to 0.3), the payer's known account or customer
    id (0.2), a partial reference (0.15), the oldest due (0.05)."""
    pool: dict[str, OpenInvoice] = {i.invoice_id: i for i in book.with_amount(p.currency, p.amount)}
    known = {c for c in (book.payer_accounts.get(p.payer_account or ""), p.customer_id) if c}
    for customer in known | book.customers_like(p.payer_name):
        pool.update((i.invoice_id, i) for i in book.of_customer(customer, p.currency))
    for key in book.keys_like(refs.tokens):
        pool.update((i.invoice_id, i) for i in book.open(book.named_by_key(key), p.currency))
    if not pool:
        return []
    oldest = min((i.due_date for i in pool.values() if i.due_date), default=None)
    payer = normalise_name(p.payer_name)
    scored = []
    for inv in pool.values():
        score, why = 0.0, []
        if inv.balance == p.amount:
            score += 0.5
            why.append("amount equal to the open balance")
        if payer and inv.customer_name:
            likeness = SequenceMatcher(None, payer, normalise_name(inv.customer_name)).ratio()
            if likeness >= 0.5:
                score += 0.3 * likeness
                why.append(f"payer name like {inv.customer_name!r} ({likeness:.2f})")
        if inv.customer_id in known:
            score += 0.2
            why.append(f"the payer is customer {inv.customer_id}")
        if token := _partial_reference(refs.tokens, inv):
            score += 0.15
            why.append(f"remittance {token!r} resembles {inv.number}")
        if inv.due_date and oldest and inv.due_date == oldest:
            score += 0.05
            why.append(f"oldest due ({inv.due_date.isoformat()})")
        scored.append((-round(score, 4), inv.age_key(), inv, score, why))
    scored.sort(key=lambda s: (s[0], s[1]))
    return [
        {
            "invoice_id": inv.invoice_id,
            "number": inv.number,
            "customer_id": inv.customer_id,
            "balance": format_amount(inv.balance, inv.currency),
            "currency": inv.currency,
            "due_date": inv.due_date.isoformat() if inv.due_date else None,
            "score": round(score, 2),
            "why": "; ".join(why) or "open in the payment's currency",
        }
        for _, _, inv, score, why in scored[:MAX_SUGGESTIONS]
    ]
