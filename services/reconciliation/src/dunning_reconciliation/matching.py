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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from difflib import SequenceMatcher

from dunning.money import format_amount
from dunning_reconciliation.domain import Allocation, IncomingPayment
from dunning_reconciliation.match_book import DIGIT_RUN, Book, OpenInvoice, name_words, normalise_name
from dunning_reconciliation.match_references import (
    References,
    compact,
    creditor_reference_for,
    is_creditor_reference,
    normalise_token,
    references_in,
)

__all__ = [
    "Book",
    "Decision",
    "OpenInvoice",
    "References",
    "Named",
    "by_reference",
    "compact",
    "creditor_reference_for",
    "decide",
    "exact_sum",
    "is_creditor_reference",
    "name_words",
    "named_by_reference",
    "names_open",
    "normalise_name",
    "normalise_token",
    "references_in",
    "spread",
    "suggest",
]

SUM_SEARCH_LIMIT = 12  # the oldest open invoices a customer_sum search looks at (2**12 subsets at most)
MAX_SUGGESTIONS = 5


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


Named = tuple[set[str], set[str]]


def named_by_reference(p: IncomingPayment, book: Book, refs: References) -> Named:
    """The invoices p's creditor reference names, and those its remittance's tokens name (a key naming
    two is ambiguous): what rules 1 and 2 decide on, whatever their balances. It depends on the book's
    keys only, which a batch's decisions leave alone (they lower balances): computed once a payment."""
    structured = compact(p.creditor_reference or "")
    valid = bool(structured) and is_creditor_reference(structured)
    rfs = [structured] if valid else []
    rfs += [r for r in refs.creditor_references if r and is_creditor_reference(r)]
    by_rf = _unique_named(book, rfs, book.named_by_rf)
    if structured and not valid:
        by_rf |= _unique_named(book, [normalise_token(p.creditor_reference or "")], book.named_by_key)
    return by_rf, _unique_named(book, refs.tokens, book.named_by_key)


def names_open(p: IncomingPayment, book: Book, named: Named) -> bool:
    """`by_reference(p, book, refs, named) is not None` without building the decision: an invoice
    that `named` holds is open in p's currency (load_book asks it of each line with a reference;
    tests/unit/test_matching_parity.py holds the two equal)."""
    by_rf, by_tokens = named
    return book.any_open(by_rf, p.currency) or book.any_open(by_tokens, p.currency)


def by_reference(p: IncomingPayment, book: Book, refs: References, named: Named | None = None) -> Decision | None:
    """Rules 1 and 2: the open invoices p's creditor reference, or else its remittance, names
    (`named`: named_by_reference(p, book, refs), when the caller has it already)."""
    by_rf, by_tokens = named if named is not None else named_by_reference(p, book, refs)
    if invoices := book.open(by_rf, p.currency):
        reason = f"creditor reference names {_labels(invoices)}"
        return Decision("creditor_reference", reason, spread(p.amount, invoices, "creditor_reference", reason))

    if invoices := book.open(by_tokens, p.currency):
        reason = f"{_labels(invoices)} named in the remittance"
        return Decision("reference", reason, spread(p.amount, invoices, "reference", reason))
    return None


def decide(
    p: IncomingPayment,
    book: Book,
    refs: References | None = None,
    *,
    suggestions: bool = True,
    references: bool = True,
    named: Named | None = None,
) -> Decision:
    """The rule that matches p against the book's open invoices, in the module's order (no match:
    with its suggestions unless `suggestions` is false). `references=False` skips rules 1 and 2: the
    caller found by_reference None on this book already (a book's balances only fall, so it stays None);
    `named`: named_by_reference(p, book, refs), when the caller has it."""
    refs = refs if refs is not None else references_in(p.remittance)
    if references and (found := by_reference(p, book, refs, named)):
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
    runs = {r for k in (inv.number, inv.external_id) for r in DIGIT_RUN.findall(normalise_token(k))}
    return next((t for t in tokens if runs.intersection(DIGIT_RUN.findall(t))), None)


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
