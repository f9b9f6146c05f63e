"""The delivery policy's in-memory index, compact: no Python object per user or per rule.

Everything a decision reads lives in a few numpy arrays:

- ids -> rows. Every id the index has heard of (a user, or a sender named in a rule or a
  consent) has a dense row number. Its lookup key is a 64-bit keyed hash of the id (the
  interpreter's SipHash of the string, whose key is random per process), held in one sorted
  array (`_keys`, beside the row of each key, `_krow`), with a table of where each range of keys
  starts (`_bucket`) so that a lookup bisects a few entries only. Each row also holds a second
  64-bit keyed hash of its id (`_check`), compared on every lookup: a key that matches but
  belongs to another id is not mistaken for it. Two ids that share a lookup key (a collision)
  are kept in a side table (`_collided`, (key, check) -> row) and their key's row in `_krow` is
  -1; collisions are found when ids are added (load, apply, merge). Two different ids are
  taken for one only if both 64-bit hashes agree (odds of 2^-128 per pair, and the keys are
  secret to the process).
- per row: the identified number (`_phone`: the E.164 digits as an integer, 0 when not
  identified; a number that is not E.164 is kept as it is in `_odd_phones`) and a byte of flags
  (known user, unaccepted-sender policy set, and its value).
- per (recipient, sender) pair with a rule or a consent, a compressed sparse row layout: for
  recipient row r, `_senders[_start[r]:_start[r + 1]]` are the sender rows, sorted, and `_vals`
  beside them the pair's bits (accepted, refused, consented). A pair whose bits all clear (a
  rule set back to NONE and no consent) stays as a tombstone until the next merge.
- restriction orders: few, in small dicts keyed by the exact user id or number.

Changes from the change log apply in place where the arrays have room for them (a user's
state, number and policy; a pair that exists); what needs a new slot in a sorted array (a new
id, a new pair) goes to a small overlay (`_fresh`: id -> row, `_pairs`: pair -> bits), read
before the arrays and merged into them once it holds `merge_threshold` entries (a merge is a
few passes over the arrays: 0.2 s for 65,536 new pairs into 3 million on a loaded 2-core
machine). Batches are decided over the arrays for all their pairs at once (decide_batch).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import operator
import sys
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.messenger_gateway.identification.model import State
from services.messenger_gateway.policy.model import (
    DECISIONS,
    ChangeKind,
    Consent,
    Decision,
    DeliveryReason,
    MessageKind,
    OrderScope,
    OrderState,
    OrderTarget,
    PolicyChange,
    SenderRule,
    Snapshot,
    UnacceptedPolicy,
    decide_by_rules,
)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]

# Row flags.
KNOWN = 1  # the user started an identification here
POLICY_SET = 2  # the user chose an unaccepted-sender policy (else the gateway's default)
POLICY_REFUSE = 4  # ... and it is REFUSE
# Pair bits.
ACCEPTED = 1
REFUSED = 2
CONSENTED = 4
_RULE_BITS = ACCEPTED | REFUSED

MERGE_THRESHOLD = 1 << 16  # overlay entries (new ids + new pairs) that trigger a merge
_CHUNK = 1 << 16  # snapshot rows read at a time
_BUCKET_KEYS = 8  # lookup keys per bucket of the bucket table, on average
_ODD_PHONE = -1  # identified, the number kept in _odd_phones
_IDENTIFIED = State.IDENTIFIED.value
_ROW_BITS = 32  # a pair is recipient_row << 32 | sender_row
_MAX_LOAD_ROWS = 1 << 28  # a pair and its 3 bits in one int64 while a snapshot loads


def _phone_code(phone: str) -> int:
    """An E.164 number as the integer of its digits (exact: E.164 has no leading zero);
    _ODD_PHONE for anything else."""
    digits = phone[1:]
    if phone[:1] == "+" and 0 < len(digits) <= 15 and digits.isdigit() and digits[0] != "0":
        return int(digits)
    return _ODD_PHONE


@dataclass(frozen=True, slots=True)
class Footprint:
    """What the index holds, in bytes: arrays per row (users and senders), arrays per pair
    (rules and consents), and the overlay and side tables (estimated from the dicts)."""

    users: int
    rows: int
    pairs: int
    row_bytes: int
    pair_bytes: int
    overlay_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.row_bytes + self.pair_bytes + self.overlay_bytes


class PolicyIndex:
    """Everything a decision reads, in memory: users (identified or not), sender rules,
    unaccepted-sender policies, automated consents, and the restriction orders in force.

    Changed only by load() and apply(), each synchronous (no await inside), so a decision on
    the event loop always sees the index at one version."""

    def __init__(
        self,
        *,
        refuse_unaccepted_by_default: bool = False,
        key_bits: int = 64,
        merge_threshold: int = MERGE_THRESHOLD,
    ) -> None:
        if not 1 <= key_bits <= 64:
            raise ValueError("key_bits must be 1 to 64")
        self.refuse_unaccepted_by_default = refuse_unaccepted_by_default
        self.key_bits = key_bits  # fewer than 64 only in tests: collisions made common
        self.merge_threshold = merge_threshold
        self.version = 0
        self._mask = (1 << key_bits) - 1 if key_bits < 64 else 0
        self._kbase = 1 << 63 if key_bits == 64 else 0  # makes keys non-negative for buckets
        self._users = 0  # rows with KNOWN
        # rows: the per-row arrays have room for len(self._check) rows, _nrows of them used
        self._nrows = 0
        # (room for one row from the start: a batch gathers from them before any row exists)
        self._check: I64 = np.zeros(1, np.int64)
        self._phone: I64 = np.zeros(1, np.int64)
        self._flags: U8 = np.zeros(1, np.uint8)
        self._odd_phones: dict[int, str] = {}
        # the merged ids: sorted lookup keys, their rows (-1: collided), the bucket table
        self._keys: I64 = np.zeros(0, np.int64)
        self._krow: I32 = np.zeros(0, np.int32)
        self._collided: dict[tuple[int, int], int] = {}
        self._bucket: I32 = np.zeros(2, np.int32)
        self._bucket_shift = key_bits  # a key's bucket: (key >> shift) + offset (_set_keys)
        self._bucket_offset = 0
        # the merged pairs (CSR over the first _csr_rows rows)
        self._csr_rows = 0
        self._start: Any = np.zeros(1, np.int32)  # int32 below 2^31 pairs, else int64
        self._senders: I32 = np.zeros(0, np.int32)
        self._vals: U8 = np.zeros(0, np.uint8)
        self._tombstones = 0
        # the overlay
        self._fresh: dict[str, int] = {}  # ids given a row since the last merge
        self._pairs: dict[int, int] = {}  # new pairs since the last merge -> bits (never 0)
        # restriction orders in force (few): exact ids and numbers
        self._orders: dict[str, tuple[OrderTarget, str, OrderScope]] = {}
        self._restricted_users: dict[str, dict[str, OrderScope]] = {}
        self._restricted_phones: dict[str, dict[str, OrderScope]] = {}
        self._set_keys(self._keys, self._krow)  # the bucket table of no keys; the views

    # --- keys and rows -------------------------------------------------------------------------

    def _key(self, user_id: str) -> int:
        return hash(user_id) & self._mask if self._mask else hash(user_id)

    def _refresh_views(self) -> None:
        """memoryviews for scalar reads and writes (a Python int per access, no numpy scalar)."""
        self._keys_v = _view(self._keys)
        self._krow_v = _view(self._krow)
        self._bucket_v = _view(self._bucket)
        self._check_v = _view(self._check)
        self._phone_v = _view(self._phone)
        self._flags_v = _view(self._flags)
        self._start_v = _view(self._start)
        self._senders_v = _view(self._senders)
        self._vals_v = _view(self._vals)

    def _row(self, user_id: str) -> int:
        """The id's row; -1 when the index never heard of it."""
        row = self._fresh.get(user_id)
        if row is not None:
            return row
        key = hash(user_id) & self._mask if self._mask else hash(user_id)
        bucket = (key >> self._bucket_shift) + self._bucket_offset
        hi = self._bucket_v[bucket + 1]
        i = bisect_left(self._keys_v, key, self._bucket_v[bucket], hi)
        if i == hi or self._keys_v[i] != key:
            return -1
        row = self._krow_v[i]
        check = hash(user_id + "\x00")
        if row >= 0:
            return row if self._check_v[row] == check else -1
        return self._collided.get((key, check), -1)

    def _row_or_new(self, user_id: str) -> int:
        row = self._row(user_id)
        if row >= 0:
            return row
        row = self._add_rows(1)
        self._check_v[row] = hash(user_id + "\x00")
        self._fresh[user_id] = row
        self._maybe_merge()
        return row

    def _add_rows(self, count: int) -> int:
        """Room for `count` more rows (zeroed); returns the first one's number."""
        first, need = self._nrows, self._nrows + count
        if need > len(self._check):
            cap = max(need, len(self._check) * 5 // 4 + 16)
            self._check = _grown(self._check, cap)
            self._phone = _grown(self._phone, cap)
            self._flags = _grown(self._flags, cap)
            self._refresh_views()
        self._nrows = need
        return first

    # --- building ----------------------------------------------------------------------------

    def load(self, snapshot: Snapshot) -> None:
        """Replace the whole index with the snapshot (each table streamed in chunks; a user
        listed more than once takes their last row)."""
        fresh = PolicyIndex(
            refuse_unaccepted_by_default=self.refuse_unaccepted_by_default,
            key_bits=self.key_bits,
            merge_threshold=self.merge_threshold,
        )
        fresh._load_users(snapshot.users)
        fresh._load_pairs(snapshot.sender_rules, snapshot.consents)
        for user_id, policy in snapshot.unaccepted:
            fresh._set_policy(fresh._row_or_new(user_id), policy)
        for order_id, target, value, scope in snapshot.orders:
            fresh._enforce(order_id, OrderTarget(target), value, OrderScope(scope))
        fresh._merge()
        fresh.version = snapshot.version
        self.__dict__.update(fresh.__dict__)
        _release_free_heap()

    def _hashes(self, ids: Sequence[str]) -> tuple[I64, I64]:
        keys = np.fromiter(map(hash, ids), np.int64, len(ids))
        if self._mask:
            keys &= self._mask
        checks = np.fromiter(
            map(hash, map(operator.add, ids, itertools.repeat("\x00"))), np.int64, len(ids)
        )
        return keys, checks

    def _load_users(self, users: Iterable[tuple[str, str, str]]) -> None:
        keys, checks, phones = [], [], []
        odd: dict[int, str] = {}  # position in the snapshot -> a number that is not E.164
        seen = 0
        for chunk in _chunks(users):
            ids, numbers, states = _columns(chunk, 3)
            k, c = self._hashes(ids)
            keys.append(k)
            checks.append(c)
            codes = _phone_codes(numbers, odd, seen)
            codes[np.fromiter(map(_IDENTIFIED.__ne__, states), bool, len(states))] = 0
            phones.append(codes)
            seen += len(ids)
        key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        check = np.concatenate(checks) if checks else np.zeros(0, np.int64)
        phone = np.concatenate(phones) if phones else np.zeros(0, np.int64)
        for columns in (keys, checks, phones):
            columns.clear()
        order = np.argsort(key, kind="stable")  # equal keys in snapshot order
        key = key[order]  # one at a time: each old array freed as the next is made
        check = check[order]
        phone = phone[order]
        last = np.ones(len(key), bool)  # one row per user: the last of its rows
        shared = np.flatnonzero(key[1:] == key[:-1]) if len(key) else np.zeros(0, np.int64)
        if len(shared):
            _last_of_each_id(check, shared, last)
        kept = np.flatnonzero(last)
        n = len(kept)
        self._add_rows(n)
        self._check[:n] = check[kept]
        self._phone[:n] = phone[kept]
        self._flags[:n] = KNOWN
        self._users = n
        if odd:
            sorted_at = np.empty_like(order)
            sorted_at[order] = np.arange(len(order))
            new_row = np.cumsum(last) - 1
            for position, number in odd.items():
                j = int(sorted_at[position])
                if last[j] and phone[j] == _ODD_PHONE:
                    self._odd_phones[int(new_row[j])] = number
        self._set_keys(key[kept], np.arange(n, dtype=np.int32))

    def _set_keys(self, keys: I64, rows: I32) -> None:
        """The merged ids (keys sorted): a key shared by several ids goes to the side table."""
        dup = np.zeros(len(keys), bool)
        if len(keys) > 1:
            same = keys[1:] == keys[:-1]
            dup[1:] |= same
            dup[:-1] |= same
        if dup.any():
            for i in np.flatnonzero(dup).tolist():
                row = int(rows[i])
                self._collided[int(keys[i]), int(self._check[row])] = row
            first = np.ones(len(keys), bool)
            first[1:] = keys[1:] != keys[:-1]
            rows = np.where(dup, -1, rows).astype(np.int32)[first]
            keys = keys[first]
        self._keys, self._krow = keys, rows
        buckets = max(1, len(keys) // _BUCKET_KEYS)
        bits = min(self.key_bits, max(1 if self._kbase else 0, buckets.bit_length() - 1))
        self._bucket_shift = self.key_bits - bits
        self._bucket_offset = self._kbase >> self._bucket_shift
        bounds = (np.arange((1 << bits) + 1, dtype=object) << self._bucket_shift) - self._kbase
        self._bucket = np.searchsorted(
            keys, np.clip(bounds, -(1 << 63), (1 << 63) - 1).astype(np.int64)
        ).astype(np.int32)
        self._bucket[-1] = len(keys)
        self._refresh_views()

    def _rows_of(self, ids: Sequence[str]) -> I64:
        """The rows of ids (vectorised lookup), new rows for ids not seen yet."""
        keys, checks = self._hashes(ids)
        rows = np.full(len(ids), -1, np.int64)
        if len(self._keys):
            at = np.minimum(_search(self._keys, keys), len(self._keys) - 1)
            found = self._keys[at] == keys
            krow = np.where(found, self._krow[at], -1).astype(np.int64)
            ok = (krow >= 0) & (self._check[np.maximum(krow, 0)] == checks)
            rows = np.where(ok, krow, -1)
        for i in np.flatnonzero(rows < 0).tolist():
            rows[i] = self._row_or_new(ids[i])
        return rows

    def _load_pairs(
        self, rules: Iterable[tuple[str, str, str]], consents: Iterable[tuple[str, str]]
    ) -> None:
        refused = SenderRule.REFUSED.value
        parts: list[I64] = []
        for chunk in _chunks(rules):
            recipients, senders, values = _columns(chunk, 3)
            bits = np.fromiter(
                (REFUSED if v == refused else ACCEPTED for v in values), np.int64, len(values)
            )
            parts.append(self._packed(recipients, senders, bits))
        for chunk in _chunks(consents):
            recipients, senders = _columns(chunk, 2)
            parts.append(self._packed(recipients, senders, np.full(len(chunk), CONSENTED)))
        # in place where it can be: the peak is a few times the pairs' final size
        pair = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        parts.clear()
        pair.sort()  # by recipient row, sender row: a pair's rule and consent side by side
        vals: Any = pair.astype(np.uint8) & 7
        pair >>= 3
        first = np.ones(len(pair), bool)
        first[1:] = pair[1:] != pair[:-1]
        if not first.all():  # a pair with a rule and a consent: one entry, the bits joined
            starts = np.flatnonzero(first)
            vals = np.bitwise_or.reduceat(vals, starts).astype(np.uint8)
            pair = pair[starts]
        del first
        self._merge_rows()
        self._senders = pair.astype(np.int32)  # the low 32 bits: the sender's row
        self._vals = vals
        pair >>= _ROW_BITS
        self._start = _offsets(np.searchsorted(pair, np.arange(self._nrows + 1)))
        self._csr_rows = self._nrows
        self._refresh_views()

    def _packed(self, recipients: Sequence[str], senders: Sequence[str], bits: Any) -> I64:
        """(recipient row << 32 | sender row) << 3 | bits, for one sort of every pair."""
        r = self._rows_of(recipients)
        s = self._rows_of(senders)
        if self._nrows >= _MAX_LOAD_ROWS:
            raise ValueError(f"a snapshot of more than {_MAX_LOAD_ROWS:,} ids")
        packed: I64 = (((r << _ROW_BITS) | s) << 3) | bits
        return packed

    def apply(self, change: PolicyChange) -> None:
        """Apply one change-log entry (the next version)."""
        kind = change.kind
        if kind is ChangeKind.IDENTIFICATION:
            row = self._row_or_new(change.user_id)
            if not self._flags_v[row] & KNOWN:
                self._flags_v[row] |= KNOWN
                self._users += 1
            self._odd_phones.pop(row, None)
            code = 0
            if change.value == State.IDENTIFIED.value:
                code = _phone_code(change.phone_number)
                if code == _ODD_PHONE:
                    self._odd_phones[row] = change.phone_number
            self._phone_v[row] = code
        elif kind is ChangeKind.SENDER_RULE:
            bits = {SenderRule.ACCEPTED.value: ACCEPTED, SenderRule.REFUSED.value: REFUSED}
            self._set_pair(change.user_id, change.sender_id, _RULE_BITS, bits.get(change.value, 0))
        elif kind is ChangeKind.UNACCEPTED_POLICY:
            self._set_policy(self._row_or_new(change.user_id), change.value)
        elif kind is ChangeKind.AUTOMATED_CONSENT:
            granted = CONSENTED if change.value == Consent.GRANTED.value else 0
            self._set_pair(change.user_id, change.sender_id, CONSENTED, granted)
        elif kind is ChangeKind.RESTRICTION_ORDER:
            if change.value == OrderState.IN_FORCE.value:
                target = OrderTarget.PHONE if change.phone_number else OrderTarget.USER
                value = change.phone_number or change.user_id
                self._enforce(change.order_id, target, value, OrderScope(change.scope))
            else:
                self._lift(change.order_id)
        self.version = change.version

    def _set_policy(self, row: int, policy: str) -> None:
        flags = self._flags_v[row] & ~(POLICY_SET | POLICY_REFUSE)
        if policy == UnacceptedPolicy.REFUSE.value:
            flags |= POLICY_SET | POLICY_REFUSE
        elif policy == UnacceptedPolicy.ALLOW.value:
            flags |= POLICY_SET
        self._flags_v[row] = flags

    def _set_pair(self, recipient: str, sender: str, mask: int, bits: int) -> None:
        """Set the pair's bits under mask: in place when the pair is in the arrays (a
        tombstone when none are left), else in the overlay."""
        r = self._row_or_new(recipient)
        s = self._row_or_new(sender)
        i = self._slot(r, s)
        if i >= 0:
            old = self._vals_v[i]
            new = (old & ~mask) | bits
            self._vals_v[i] = new
            self._tombstones += (new == 0) - (old == 0)
            return
        pair = r << _ROW_BITS | s
        new = (self._pairs.get(pair, 0) & ~mask) | bits
        if new:
            self._pairs[pair] = new
            self._maybe_merge()
        else:
            self._pairs.pop(pair, None)

    def _slot(self, r: int, s: int) -> int:
        """The pair's position in the merged arrays; -1 when it is not there."""
        if r >= self._csr_rows:
            return -1
        lo, hi = self._start_v[r], self._start_v[r + 1]
        if lo == hi:
            return -1
        i = bisect_left(self._senders_v, s, lo, hi)
        return i if i < hi and self._senders_v[i] == s else -1

    def _bits(self, r: int, s: int) -> int:
        i = self._slot(r, s)
        if i >= 0:
            return int(self._vals_v[i])
        return self._pairs.get(r << _ROW_BITS | s, 0) if self._pairs else 0

    def _enforce(self, order_id: str, target: OrderTarget, value: str, scope: OrderScope) -> None:
        self._lift(order_id)  # an order is in force once, on what it names last
        self._orders[order_id] = (target, value, scope)
        by = self._restricted_phones if target is OrderTarget.PHONE else self._restricted_users
        by.setdefault(value, {})[order_id] = scope

    def _lift(self, order_id: str) -> None:
        entry = self._orders.pop(order_id, None)
        if entry is None:
            return
        target, value, _ = entry
        by = self._restricted_phones if target is OrderTarget.PHONE else self._restricted_users
        orders = by.get(value)
        if orders is not None:
            orders.pop(order_id, None)
            if not orders:
                del by[value]

    # --- merging the overlay -------------------------------------------------------------------

    @property
    def overlay_size(self) -> int:
        """Entries waiting in the overlay: ids given a row and pairs added since the merge."""
        return len(self._fresh) + len(self._pairs)

    def key_collisions(self) -> int:
        """Ids in the side table: ids whose lookup key another merged id shares."""
        return len(self._collided)

    def _maybe_merge(self) -> None:
        if len(self._fresh) + len(self._pairs) >= self.merge_threshold:
            self._merge()

    def merge(self) -> None:
        """Merge the overlay into the arrays now (apply() does it past merge_threshold)."""
        self._merge()

    def _merge(self) -> None:
        self._merge_rows()
        self._merge_pairs()

    def _merge_rows(self) -> None:
        """Ids given a row since the last merge join the sorted keys; new rows get empty pair
        ranges."""
        if self._fresh:
            fresh = sorted((self._key(u), row) for u, row in self._fresh.items())
            keys = np.fromiter((k for k, _ in fresh), np.int64, len(fresh))
            rows = np.fromiter((r for _, r in fresh), np.int32, len(fresh))
            old_rows = np.where(self._krow >= 0, self._krow, -1).astype(np.int32)
            # the side table's rows come back into the arrays and are split out again
            side = sorted((k, r) for (k, _), r in self._collided.items())
            self._collided = {}
            keep = old_rows >= 0
            all_keys = np.concatenate(
                [self._keys[keep], np.array([k for k, _ in side], np.int64), keys]
            )
            all_rows = np.concatenate(
                [old_rows[keep], np.array([r for _, r in side], np.int32), rows]
            )
            order = np.argsort(all_keys, kind="stable")
            self._set_keys(all_keys[order], all_rows[order])
            self._fresh = {}
        if self._csr_rows < self._nrows:
            extra = np.full(self._nrows - self._csr_rows, self._start[-1], self._start.dtype)
            self._start = np.concatenate([self._start, extra])
            self._csr_rows = self._nrows
            self._refresh_views()

    def _merge_pairs(self) -> None:
        """Tombstones leave the arrays, and the overlay's pairs join them in order."""
        if self._tombstones:
            keep = self._vals != 0
            before = np.zeros(len(keep) + 1, np.int64)
            np.cumsum(keep, out=before[1:])
            self._start = _offsets(before[self._start])
            self._senders = self._senders[keep]
            self._vals = self._vals[keep]
            self._tombstones = 0
            self._refresh_views()
        if self._pairs:
            new = sorted(self._pairs.items())
            pairs = np.fromiter((p for p, _ in new), np.int64, len(new))
            bits = np.fromiter((b for _, b in new), np.uint8, len(new))
            recipients = pairs >> _ROW_BITS
            senders = (pairs & ((1 << _ROW_BITS) - 1)).astype(np.int32)
            at = self._bisect(recipients, senders)
            self._senders = np.insert(self._senders, at, senders)
            self._vals = np.insert(self._vals, at, bits)
            added = np.bincount(recipients, minlength=self._csr_rows)
            start = self._start.astype(np.int64)
            start[1:] += np.cumsum(added)
            self._start = _offsets(start)
            self._pairs = {}
            self._refresh_views()

    # --- reading -------------------------------------------------------------------------------

    @property
    def users(self) -> int:
        return self._users

    @property
    def orders_in_force(self) -> int:
        return len(self._orders)

    def is_identified(self, user_id: str) -> bool:
        row = self._row(user_id)
        return row >= 0 and self._phone_v[row] != 0

    def identified_number(self, user_id: str) -> str | None:
        """The number the user is identified by; None when not identified."""
        row = self._row(user_id)
        return None if row < 0 else self._number(row)

    def _number(self, row: int) -> str | None:
        code = self._phone_v[row]
        if code == 0:
            return None
        return self._odd_phones[row] if code == _ODD_PHONE else f"+{code}"

    def is_known(self, user_id: str) -> bool:
        row = self._row(user_id)
        return row >= 0 and bool(self._flags_v[row] & KNOWN)

    def is_restricted(self, user_id: str, kind: MessageKind) -> bool:
        return self._restricted(user_id, self._row(user_id), kind)

    def _restricted(self, user_id: str, row: int, kind: MessageKind) -> bool:
        scopes = self._restricted_users.get(user_id)
        if scopes and _restricts(scopes, kind):
            return True
        if row < 0 or not self._restricted_phones:
            return False
        phone = self._number(row)
        if phone is None:
            return False
        scopes = self._restricted_phones.get(phone)
        return bool(scopes) and _restricts(scopes, kind)  # type: ignore[arg-type]

    def _pair_bits(self, recipient: str, sender: str) -> int:
        r, s = self._row(recipient), self._row(sender)
        return 0 if r < 0 or s < 0 else self._bits(r, s)

    def refused(self, recipient: str, sender: str) -> bool:
        return bool(self._pair_bits(recipient, sender) & REFUSED)

    def accepted(self, recipient: str, sender: str) -> bool:
        return bool(self._pair_bits(recipient, sender) & ACCEPTED)

    def refuses_unaccepted(self, recipient: str) -> bool:
        row = self._row(recipient)
        flags = self._flags_v[row] if row >= 0 else 0
        if flags & POLICY_SET:
            return bool(flags & POLICY_REFUSE)
        return self.refuse_unaccepted_by_default

    def consented(self, recipient: str, sender: str) -> bool:
        return bool(self._pair_bits(recipient, sender) & CONSENTED)

    def decide_by_rules(self, sender: str, recipient: str, kind: MessageKind) -> Decision:
        """The reference: the first rule of RULES (in order) that refuses, or ALLOWED."""
        return decide_by_rules(self, sender, recipient, kind)

    def decide(self, sender: str, recipient: str, kind: MessageKind) -> Decision:
        """decide_by_rules, written out for speed (it runs for every message): the same rules
        in the same order, each lookup done once. test_policy.py checks that the two agree on
        the table of cases and on random indexes."""
        s = self._row(sender)
        if s < 0 or self._phone_v[s] == 0:  # unknown, or known and not IDENTIFIED
            return _NOT_IDENTIFIED
        if (self._restricted_users or self._restricted_phones) and self._restricted(
            sender, s, kind
        ):
            return _RESTRICTED
        r = self._row(recipient)
        if r < 0:
            return _UNKNOWN
        flags = self._flags_v[r]
        if not flags & KNOWN:
            return _UNKNOWN
        if kind is _STATE_MAILING:
            return ALLOWED
        bits = self._bits(r, s)
        if bits & REFUSED:
            return _REFUSED
        if kind is _AUTOMATED:
            return ALLOWED if bits & CONSENTED else _NO_CONSENT
        if not bits & ACCEPTED and (
            flags & POLICY_REFUSE if flags & POLICY_SET else self.refuse_unaccepted_by_default
        ):
            return _NOT_ACCEPTED
        return ALLOWED

    def decide_batch(self, pairs: Sequence[tuple[str, str, MessageKind]]) -> list[Decision]:
        """decide() for each (sender, recipient, kind), computed over the arrays for the whole
        batch at once: the ids hashed and looked up together, the rules applied as array
        operations in their order. test_policy.py checks it against decide()."""
        count = len(pairs)
        if count < _BATCH_MIN:
            return [self.decide(s, r, k) for s, r, k in pairs]
        senders, recipients, kinds = _columns(pairs, 3)
        s = self._lookup(senders)
        r = self._lookup(recipients)
        known_s = s >= 0
        phone = np.where(known_s, self._phone[np.maximum(s, 0)], 0)
        kind = np.fromiter(map(_KIND_CODE.__getitem__, kinds), np.int8, count)
        restricted = np.zeros(count, bool)
        if self._restricted_users or self._restricted_phones:
            for i in np.flatnonzero(phone != 0).tolist():
                restricted[i] = self._restricted(senders[i], int(s[i]), kinds[i])
        known_r = r >= 0
        flags = np.where(known_r, self._flags[np.maximum(r, 0)], 0)
        bits = self._bits_of(r, s, known_r & known_s)
        refuses = np.where(
            flags & POLICY_SET, (flags & POLICY_REFUSE) != 0, self.refuse_unaccepted_by_default
        )
        automated, personal = kind == _KIND_CODE[_AUTOMATED], kind == _KIND_CODE[_PERSONAL]
        reason = np.select(
            [
                phone == 0,
                restricted,
                (flags & KNOWN) == 0,
                kind == _KIND_CODE[_STATE_MAILING],
                (bits & REFUSED) != 0,
                automated & ((bits & CONSENTED) == 0),
                personal & ((bits & ACCEPTED) == 0) & refuses,
            ],
            _CHOICES,
            0,
        )
        return list(map(_BY_CODE.__getitem__, reason.tolist()))

    def _lookup(self, ids: list[str]) -> I64:
        """_row() of each id, the arrays searched for all of them at once."""
        keys, checks = self._hashes(ids)
        rows = np.full(len(ids), -1, np.int64)
        collided = np.zeros(0, np.int64)
        if len(self._keys):
            bucket = (keys >> self._bucket_shift) + self._bucket_offset
            lo = self._bucket[bucket].astype(np.int64)
            hi = self._bucket[bucket + 1].astype(np.int64)
            at = np.minimum(_bisect_ranges(self._keys, lo, hi, keys), len(self._keys) - 1)
            krow = self._krow[at].astype(np.int64)
            found = self._keys[at] == keys
            ok = found & (krow >= 0) & (self._check[np.maximum(krow, 0)] == checks)
            rows = np.where(ok, krow, -1)
            collided = np.flatnonzero(found & (krow < 0))
        for i in collided.tolist():
            rows[i] = self._collided.get((int(keys[i]), int(checks[i])), -1)
        if self._fresh:
            fresh = self._fresh
            for i in np.flatnonzero(rows < 0).tolist():
                rows[i] = fresh.get(ids[i], -1)
        return rows

    def _bits_of(self, r: I64, s: I64, both: npt.NDArray[np.bool_]) -> I64:
        """_bits() of each pair (0 where either id is unknown): a binary search within each
        recipient's range of the pair arrays, all pairs a step at a time."""
        bits = np.zeros(len(r), np.int64)
        inside = both & (r < self._csr_rows)
        if inside.any() and len(self._senders):
            rr, ss = r[inside], s[inside]
            end = self._start[rr + 1].astype(np.int64)
            lo = self._bisect(rr, ss)
            at = np.minimum(lo, len(self._senders) - 1)
            hit = (lo < end) & (self._senders[at] == ss)
            bits[inside] = np.where(hit, self._vals[at], 0)
        if self._pairs:
            pairs = self._pairs
            for i in np.flatnonzero(both).tolist():
                bits[i] |= pairs.get(int(r[i]) << _ROW_BITS | int(s[i]), 0)
        return bits

    def _bisect(self, r: Any, s: Any) -> I64:
        """bisect_left of each sender row s[i] within recipient r[i]'s range of the pair
        arrays: a binary search for every pair at once, a step at a time."""
        lo: I64 = self._start[r].astype(np.int64)
        hi: I64 = self._start[r + 1].astype(np.int64)
        return _bisect_ranges(self._senders, lo, hi, s)

    # --- size --------------------------------------------------------------------------------

    def footprint(self) -> Footprint:
        row_arrays = (self._check, self._phone, self._flags, self._keys, self._krow)
        row_bytes = sum(a.nbytes for a in row_arrays) + self._bucket.nbytes + self._start.nbytes
        overlay = (self._fresh, self._pairs, self._collided, self._odd_phones)
        overlay_bytes = sum(sys.getsizeof(d) for d in overlay)
        overlay_bytes += sum(sys.getsizeof(u) for u in self._fresh)
        return Footprint(
            users=self._users,
            rows=self._nrows,
            pairs=len(self._senders) - self._tombstones + len(self._pairs),
            row_bytes=row_bytes,
            pair_bytes=self._senders.nbytes + self._vals.nbytes,
            overlay_bytes=overlay_bytes,
        )


def _bisect_ranges(haystack: Any, lo: I64, hi: I64, needles: Any) -> I64:
    """bisect_left of each needles[i] within haystack[lo[i]:hi[i]] (each range sorted): a
    binary search for all needles at once, a step at a time."""
    last = len(haystack) - 1
    if last < 0:
        return lo
    while (open_ := lo < hi).any():
        mid = (lo + hi) >> 1
        less = haystack[np.minimum(mid, last)] < needles
        lo = np.where(open_ & less, mid + 1, lo)
        hi = np.where(open_ & ~less, mid, hi)
    return lo


def _search(haystack: I64, needles: I64) -> Any:
    """np.searchsorted, the needles sorted first: the search then walks the haystack in order
    (several times faster over arrays larger than the caches)."""
    order = np.argsort(needles)
    at = np.empty(len(needles), np.int64)
    at[order] = np.searchsorted(haystack, needles[order])
    return at


def _phone_codes(numbers: Sequence[str], odd: dict[int, str], offset: int) -> I64:
    """_phone_code of each number, in C where every number is E.164 (the store's are); the
    others noted in odd by position (offset + index)."""
    codes: list[int] | None = None
    if max(map(len, numbers), default=0) <= 16:
        try:
            codes = list(map(int, numbers))
        except ValueError:
            codes = None
    if codes is None or not all(map(operator.eq, numbers, map("+{}".format, codes))):
        codes = list(map(_phone_code, numbers))
    array = np.array(codes, np.int64)
    array[array <= 0] = _ODD_PHONE  # "+0" and the like
    for i in np.flatnonzero(array == _ODD_PHONE).tolist():
        odd[offset + i] = numbers[i]
    return array


def _last_of_each_id(check: I64, shared: Any, last: npt.NDArray[np.bool_]) -> None:
    """Rows sorted by key, equal keys in snapshot order; shared: positions whose key the next
    row shares. Within each run of one key, only the last row of each id (check) stays."""
    runs = np.split(shared, np.flatnonzero(np.diff(shared) != 1) + 1)
    for run in runs:
        positions = [*run.tolist(), int(run[-1]) + 1]
        seen: set[int] = set()
        for position in reversed(positions):
            c = int(check[position])
            last[position] = c not in seen
            seen.add(c)


def _offsets(start: Any) -> Any:
    """Pair offsets in 4 bytes each while they fit, else 8."""
    small = len(start) == 0 or int(start[-1]) < (1 << 31) - 1
    return start.astype(np.int32 if small else np.int64, copy=False)


def _release_free_heap() -> None:
    """Give the C heap that a load left free (its chunks of rows, its sorting buffers) back to
    the system, where the C library can (glibc's malloc_trim): otherwise the process keeps
    several times the index's size resident after a load."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the memory stays with the process, reused by the next load


def _view(array: Any) -> memoryview:
    return memoryview(array)


def _grown(array: Any, capacity: int) -> Any:
    grown = np.zeros(capacity, array.dtype)
    grown[: len(array)] = array
    return grown


def _columns(chunk: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """The chunk's rows as columns (itemgetter in C: no object per row, no GC pass)."""
    return [list(map(operator.itemgetter(i), chunk)) for i in range(width)]


def _chunks(rows: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    it = iter(rows)
    while chunk := tuple(itertools.islice(it, _CHUNK)):
        yield chunk


def _restricts(scopes: Mapping[str, OrderScope], kind: MessageKind) -> bool:
    if kind is MessageKind.AUTOMATED:
        return True  # every scope restricts automated sending
    return any(scope is OrderScope.ALL_MESSAGES for scope in scopes.values())


ALLOWED = DECISIONS[DeliveryReason.ALLOWED]
_NOT_IDENTIFIED = DECISIONS[DeliveryReason.SENDER_NOT_IDENTIFIED]
_RESTRICTED = DECISIONS[DeliveryReason.SENDER_RESTRICTED]
_UNKNOWN = DECISIONS[DeliveryReason.RECIPIENT_UNKNOWN]
_REFUSED = DECISIONS[DeliveryReason.RECIPIENT_REFUSED_SENDER]
_NO_CONSENT = DECISIONS[DeliveryReason.NO_AUTOMATED_CONSENT]
_NOT_ACCEPTED = DECISIONS[DeliveryReason.SENDER_NOT_ACCEPTED]
_STATE_MAILING, _AUTOMATED = MessageKind.STATE_MAILING, MessageKind.AUTOMATED
_PERSONAL = MessageKind.PERSONAL
_KIND_CODE = {kind: code for code, kind in enumerate(MessageKind)}
# decide_batch's reason codes: 0 is ALLOWED
_BY_CODE = [ALLOWED, _NOT_IDENTIFIED, _RESTRICTED, _UNKNOWN, _REFUSED, _NO_CONSENT, _NOT_ACCEPTED]
(
    _CODE_NOT_IDENTIFIED,
    _CODE_RESTRICTED,
    _CODE_UNKNOWN,
    _CODE_REFUSED,
    _CODE_NO_CONSENT,
    _CODE_NOT_ACCEPTED,
) = range(1, 7)
# the reason code of each condition of decide_batch's np.select, in the rules' order
_CHOICES = (
    _CODE_NOT_IDENTIFIED,
    _CODE_RESTRICTED,
    _CODE_UNKNOWN,
    0,  # a state mailing past rule 3
    _CODE_REFUSED,
    _CODE_NO_CONSENT,
    _CODE_NOT_ACCEPTED,
)
_BATCH_MIN = 32  # smaller batches: decide() pair by pair
