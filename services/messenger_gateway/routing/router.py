"""Which operator serves a number: lookup sources tried in order, then carrier name -> operator id.

    Router([PortedNumbersTable(store), numbering_plan, CarrierData()],
           carriers={"Beeline": "beeline"}, ...)
    route = await router.resolve("+79031234567")

Each source names the carrier of a number or says it does not know (None). The first source that
knows decides, even when its carrier is not one this messenger works with: a later source would
only give an older answer (phonenumbers' carrier data names a range's ORIGINAL carrier and
knows nothing of porting). Sources, most authoritative first:
- the ported-numbers table (PortedNumbersTable, store-backed, so asked with `await`): the
  messenger's copy of the central database of ported numbers, and the donors' hints it
  remembered; it names the recipient's operator id directly (route source "ported_numbers" or
  "operator_hint"), which need not be a configured operator;
- the numbering plan: Rossvyaz's open-data range table (NumberingPlan), IDMESH_NUMBERING_PLAN;
- phonenumbers' carrier data (CarrierData), the fallback; it has holes (+7 916... gives "").
Carrier names map to operator ids through IDMESH_CARRIERS, matched ignoring case and spacing.
`route()` is the synchronous lookup for routers whose sources are all carrier sources.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeGuard

import phonenumbers
from phonenumbers import carrier as pn_carrier

from services.messenger_gateway.routing.model import PortedNumber, RouteOrigin

NUMBERING_PLAN_HEADER = ("code", "from", "to", "capacity", "operator", "region")


class CarrierSource(Protocol):
    """Names the carrier that serves an E.164 number, or None when it does not know."""

    @property
    def name(self) -> str: ...

    def carrier_for(self, e164: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class OperatorHit:
    """An operator source's answer: the operator id, and the route source to report."""

    operator_id: str
    source: str


class OperatorSource(Protocol):
    """Names the operator id that serves a number (asynchronously: store-backed), or None."""

    @property
    def name(self) -> str: ...

    async def operator_for(self, e164: str) -> OperatorHit | None: ...


class PortedStore(Protocol):
    async def ported_number(self, phone_number: str) -> PortedNumber | None: ...


ROUTE_PORTED_NUMBERS = "ported_numbers"
ROUTE_OPERATOR_HINT = "operator_hint"


class PortedNumbersTable:
    """The gateway's ported-numbers table: imported rows ("ported_numbers") and remembered
    donor hints ("operator_hint")."""

    name = ROUTE_PORTED_NUMBERS

    def __init__(self, store: PortedStore) -> None:
        self._store = store

    async def operator_for(self, e164: str) -> OperatorHit | None:
        entry = await self._store.ported_number(e164)
        if entry is None:
            return None
        source = ROUTE_OPERATOR_HINT if entry.origin is RouteOrigin.HINT else ROUTE_PORTED_NUMBERS
        return OperatorHit(entry.operator_id, source)


class NumberingPlanError(ValueError):
    """The numbering-plan file cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class NumberRange:
    code: str  # ABC/DEF code, three digits: "903"
    first: int  # first subscriber number of the range (seven digits)
    last: int
    operator: str
    region: str


class NumberingPlan:
    """Rossvyaz's numbering register: `code;from;to;capacity;operator;region` rows for +7.

    `903;0000000;9999999;10000000;Beeline;Moscow` covers +7903 0000000 .. +7903 9999999.
    Extra trailing columns (newer files add the operator's tax number) are ignored."""

    name = "numbering_plan"

    def __init__(self, ranges: Iterable[NumberRange], *, origin: str = "<numbering plan>") -> None:
        self.origin = origin
        by_code: dict[str, list[NumberRange]] = {}
        for r in ranges:
            by_code.setdefault(r.code, []).append(r)
        self._ranges: dict[str, list[NumberRange]] = {}
        self._starts: dict[str, list[int]] = {}
        for code, items in by_code.items():
            items.sort(key=lambda r: r.first)
            for before, after in itertools.pairwise(items):
                if after.first <= before.last:
                    raise NumberingPlanError(
                        f"{origin}: ranges {code};{before.first:07d};{before.last:07d} and "
                        f"{code};{after.first:07d};{after.last:07d} overlap"
                    )
            self._ranges[code] = items
            self._starts[code] = [r.first for r in items]

    def __len__(self) -> int:
        return sum(len(items) for items in self._ranges.values())

    @classmethod
    def load(cls, path: Path) -> NumberingPlan:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise NumberingPlanError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise NumberingPlanError(f"{path}: not UTF-8 text; convert the file to UTF-8") from None
        return cls.parse(text.splitlines(), origin=str(path))

    @classmethod
    def parse(cls, lines: Iterable[str], *, origin: str = "<numbering plan>") -> NumberingPlan:
        ranges: list[NumberRange] = []
        header_seen = False
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split(";")]
            if not header_seen:
                header = tuple(f.lower() for f in fields[: len(NUMBERING_PLAN_HEADER)])
                if header != NUMBERING_PLAN_HEADER:
                    raise NumberingPlanError(
                        f"{origin}:{number}: expected the header line "
                        f"{';'.join(NUMBERING_PLAN_HEADER)!r}, got {line.strip()!r}"
                    )
                header_seen = True
                continue
            ranges.append(_parse_row(fields, f"{origin}:{number}"))
        if not header_seen:
            raise NumberingPlanError(f"{origin}: empty; expected {';'.join(NUMBERING_PLAN_HEADER)}")
        return cls(ranges, origin=origin)

    def find(self, e164: str) -> NumberRange | None:
        if not (e164.startswith("+7") and len(e164) == 12 and e164[1:].isdigit()):
            return None
        code, subscriber = e164[2:5], int(e164[5:])
        starts = self._starts.get(code)
        if not starts:
            return None
        index = bisect.bisect_right(starts, subscriber) - 1
        if index < 0:
            return None
        found = self._ranges[code][index]
        return found if subscriber <= found.last else None

    def carrier_for(self, e164: str) -> str | None:
        found = self.find(e164)
        return found.operator if found else None


def _parse_row(fields: list[str], where: str) -> NumberRange:
    if len(fields) < len(NUMBERING_PLAN_HEADER):
        raise NumberingPlanError(
            f"{where}: expected {len(NUMBERING_PLAN_HEADER)} fields separated by ';', "
            f"got {len(fields)}"
        )
    code, first, last, capacity, operator, region = fields[:6]
    if not (len(code) == 3 and code.isascii() and code.isdigit()):
        raise NumberingPlanError(f"{where}: code must be three digits, got {code!r}")
    for what, value in (("from", first), ("to", last)):
        if not (len(value) == 7 and value.isascii() and value.isdigit()):
            raise NumberingPlanError(f"{where}: {what} must be seven digits, got {value!r}")
    if not (capacity.isascii() and capacity.isdigit()):
        raise NumberingPlanError(f"{where}: capacity must be a number, got {capacity!r}")
    if int(first) > int(last):
        raise NumberingPlanError(f"{where}: from {first} is after to {last}")
    if not operator:
        raise NumberingPlanError(f"{where}: operator is empty")
    return NumberRange(code, int(first), int(last), operator, region)


class CarrierData:
    """phonenumbers' carrier data: the range's original carrier, "" (None here) for holes."""

    name = "carrier_data"

    def carrier_for(self, e164: str) -> str | None:
        try:
            parsed = phonenumbers.parse(e164)
        except phonenumbers.NumberParseException:
            return None
        return pn_carrier.name_for_number(parsed, "en") or None


@dataclass(frozen=True, slots=True)
class Route:
    """Where a number goes: operator_id None when no configured operator serves it. (From the
    ported-numbers table operator_id is the recipient, configured or not; carrier is None.)"""

    operator_id: str | None
    carrier: str | None = None  # the carrier name the deciding source gave
    source: str | None = None  # the deciding source's name; None when no source knew


def _normalise(name: str) -> str:
    return " ".join(name.split()).casefold()


class Router:
    def __init__(
        self,
        sources: Sequence[CarrierSource | OperatorSource],
        *,
        carriers: Mapping[str, str],
        operators: Collection[str],
    ) -> None:
        missing = sorted({v for v in carriers.values() if v not in operators})
        if missing:
            raise ValueError(f"carriers map to unknown operator ids: {', '.join(missing)}")
        self._sources = list(sources)
        self._carriers = {_normalise(k): v for k, v in carriers.items()}

    @property
    def sources(self) -> list[str]:
        return [s.name for s in self._sources]

    async def resolve(self, e164: str) -> Route:
        """The route of a number, asking every kind of source in order."""
        for source in self._sources:
            if _is_operator_source(source):
                hit = await source.operator_for(e164)
                if hit is not None:
                    return Route(hit.operator_id, None, hit.source)
                continue
            route = self._from_carrier(source, e164)  # type: ignore[arg-type]
            if route is not None:
                return route
        return Route(None)

    def route(self, e164: str) -> Route:
        """The route of a number, for a router of carrier sources only (use resolve())."""
        for source in self._sources:
            if _is_operator_source(source):
                raise TypeError(f"source {source.name} is asynchronous: use Router.resolve()")
            route = self._from_carrier(source, e164)  # type: ignore[arg-type]
            if route is not None:
                return route
        return Route(None)

    def _from_carrier(self, source: CarrierSource, e164: str) -> Route | None:
        carrier = source.carrier_for(e164)
        if not carrier:
            return None
        return Route(self._carriers.get(_normalise(carrier)), carrier, source.name)


def _is_operator_source(source: object) -> TypeGuard[OperatorSource]:
    return hasattr(source, "operator_for")


def build_router(
    numbering_plan: NumberingPlan | None,
    *,
    carriers: Mapping[str, str],
    operators: Collection[str],
    ported: OperatorSource | None = None,
) -> Router:
    """ported (the ported-numbers table) first, then the numbering plan, then carrier data."""
    sources: list[CarrierSource | OperatorSource] = []
    if ported is not None:
        sources.append(ported)
    if numbering_plan is not None:
        sources.append(numbering_plan)
    sources.append(CarrierData())
    return Router(sources, carriers=carriers, operators=operators)
