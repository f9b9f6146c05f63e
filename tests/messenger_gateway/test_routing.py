"""Routing a number to its operator: the lookup sources in order, then carrier -> operator id."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.messenger_gateway.routing.router import (
    CarrierData,
    NumberingPlan,
    NumberingPlanError,
    Route,
    Router,
    build_router,
)

REPO = Path(__file__).resolve().parents[2]
OPERATORS = {"beeline", "megafon", "mts"}
CARRIERS = {"Beeline": "beeline", "MegaFon": "megafon"}

PLAN = NumberingPlan.parse(
    [
        "code;from;to;capacity;operator;region",
        "903;0000000;1999999;2000000;Beeline;Moscow",
        "903;2000000;2999999;1000000;MegaFon;Moscow",  # a range reassigned (table beats data)
        "916;0000000;9999999;10000000;MTS;Moscow",
    ]
)


class PortedNumbers:
    name = "ported_numbers"

    def __init__(self, ported: dict[str, str]) -> None:
        self._ported = ported

    def carrier_for(self, e164: str) -> str | None:
        return self._ported.get(e164)


def test_the_numbering_plan_is_consulted_before_carrier_data() -> None:
    router = build_router(PLAN, carriers=CARRIERS, operators=OPERATORS)
    assert router.route("+79031234567") == Route("beeline", "Beeline", "numbering_plan")
    # carrier data says Beeline for all of +7903; the table says MegaFon for this range
    assert CarrierData().carrier_for("+79032345678") == "Beeline"
    assert router.route("+79032345678") == Route("megafon", "MegaFon", "numbering_plan")


def test_carrier_data_is_the_fallback_for_numbers_outside_the_table() -> None:
    router = build_router(PLAN, carriers=CARRIERS, operators=OPERATORS)
    assert router.route("+79261234567") == Route("megafon", "MegaFon", "carrier_data")
    without_table = build_router(None, carriers=CARRIERS, operators=OPERATORS)
    assert without_table.route("+79031234567") == Route("beeline", "Beeline", "carrier_data")


def test_a_number_nobody_knows_has_no_operator() -> None:
    # +7916 is a hole in phonenumbers' carrier data
    router = build_router(None, carriers=CARRIERS, operators=OPERATORS)
    assert router.route("+79161234567") == Route(None)


def test_the_first_source_that_knows_decides_even_for_an_unmapped_carrier() -> None:
    router = build_router(PLAN, carriers=CARRIERS, operators=OPERATORS)
    # the table names MTS, which has no IDMESH_CARRIERS entry: no operator, no fallback
    assert router.route("+79161234567") == Route(None, "MTS", "numbering_plan")


def test_a_ported_numbers_source_goes_first() -> None:
    router = Router(
        [PortedNumbers({"+79031234567": "MegaFon"}), PLAN, CarrierData()],
        carriers=CARRIERS,
        operators=OPERATORS,
    )
    assert router.route("+79031234567") == Route("megafon", "MegaFon", "ported_numbers")
    assert router.route("+79031234568").source == "numbering_plan"
    assert router.sources == ["ported_numbers", "numbering_plan", "carrier_data"]


def test_carrier_names_match_ignoring_case_and_spacing() -> None:
    router = Router(
        [PortedNumbers({"+79031234567": "  beeLINE "})], carriers=CARRIERS, operators=OPERATORS
    )
    assert router.route("+79031234567").operator_id == "beeline"


def test_carriers_must_name_configured_operators() -> None:
    with pytest.raises(ValueError, match="tele2"):
        Router([], carriers={"T2": "tele2"}, operators=OPERATORS)


def test_range_boundaries_are_inclusive() -> None:
    assert PLAN.carrier_for("+79030000000") == "Beeline"
    assert PLAN.carrier_for("+79031999999") == "Beeline"
    assert PLAN.carrier_for("+79032000000") == "MegaFon"
    assert PLAN.carrier_for("+79043000000") is None
    assert PLAN.carrier_for("+375291234567") is None


def test_the_deployed_numbering_plan_loads() -> None:
    plan = NumberingPlan.load(REPO / "deploy" / "numbering-plan.csv")
    assert len(plan) >= 1
    assert plan.carrier_for("+79161234567") == "MTS"


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["903;0000000;9999999;10000000;Beeline;Moscow"], "header"),
        ([], "empty"),
        (["code;from;to;capacity;operator;region", "903;0000000;9999999"], ":2: expected 6"),
        (["code;from;to;capacity;operator;region", "9x3;0000000;9999999;1;B;M"], "three digits"),
        (["code;from;to;capacity;operator;region", "903;000;9999999;1;B;M"], "seven digits"),
        (["code;from;to;capacity;operator;region", "903;0000009;0000001;1;B;M"], "is after"),
        (["code;from;to;capacity;operator;region", "903;0000000;0000001;2;;M"], "operator"),
        (
            [
                "code;from;to;capacity;operator;region",
                "903;0000000;0000100;101;B;M",
                "903;0000050;0000200;151;C;M",
            ],
            "overlap",
        ),
    ],
)
def test_a_malformed_numbering_plan_is_refused_with_the_line(
    lines: list[str], problem: str
) -> None:
    with pytest.raises(NumberingPlanError, match=problem):
        NumberingPlan.parse(lines, origin="plan.csv")


def test_extra_columns_and_a_bom_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "plan.csv"
    path.write_text(
        "\ufeffcode;from;to;capacity;operator;region;inn\n"
        "903;0000000;9999999;10000000;Beeline;Moscow;7713076301\n",
        encoding="utf-8",
    )
    assert NumberingPlan.load(path).carrier_for("+79031234567") == "Beeline"
