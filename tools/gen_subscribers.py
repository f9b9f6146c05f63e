"""Write a subscribers CSV for `idmesh registry import`: N unique mobile numbers, in O(1) memory.

    python tools/gen_subscribers.py 10000000 data/subscribers-10m.csv
    python tools/gen_subscribers.py 5000 small.csv --invalid-every 1000 --prefix BEE

Numbers are spread over Beeline-like DEF codes (+7 903, 905, 906, 909, 960..968) in a
pseudo-random order (an affine permutation of the number space, so unique without remembering
them); contract ids run in file order (PREFIX-0000000001, ...), as an operator's export sorted by
contract would; activation dates are days between 2010 and 2025. --invalid-every K makes every
K-th row invalid in turn: a landline number, a contract id with a space, a bad date, a duplicate
number of the row before.
"""

from __future__ import annotations

import argparse
import math
from datetime import date, timedelta
from pathlib import Path

CODES = (903, 905, 906, 909, 960, 961, 962, 963, 964, 965, 966, 967, 968)
SPACE = len(CODES) * 10_000_000  # subscriber numbers per code: 7 digits
FIRST_DAY = date(2010, 1, 1)
DAYS = (date(2025, 1, 1) - FIRST_DAY).days


def _multiplier(space: int, seed: int) -> int:
    a = int(space * 0.6180339887) + 2 * seed * 104_729  # golden ratio: well scrambled
    while math.gcd(a, space) != 1:
        a += 1
    return a


def write(path: Path, count: int, *, prefix: str, invalid_every: int, seed: int) -> None:
    if count > SPACE:
        raise SystemExit(f"at most {SPACE} unique numbers")
    a = _multiplier(SPACE, seed)
    b = 1_000_003 * (seed + 1)
    dates = [(FIRST_DAY + timedelta(days=d)).isoformat() for d in range(DAYS)]
    previous = ""
    with path.open("w", encoding="utf-8", newline="\n", buffering=1 << 20) as out:
        out.write("phone_number,contract_id,activated_at\n")
        chunk: list[str] = []
        for i in range(count):
            n = (a * i + b) % SPACE
            phone = f"+7{CODES[n // 10_000_000]}{n % 10_000_000:07d}"
            contract = f"{prefix}-{i + 1:010d}"
            activated = dates[(i * DAYS) // count]
            if invalid_every and (i + 1) % invalid_every == 0:
                kind = ((i + 1) // invalid_every) % 4
                if kind == 0:
                    phone = "+74951234567"  # a Moscow landline
                elif kind == 1:
                    contract = f"{prefix} {i + 1}"
                elif kind == 2:
                    activated = "2024-13-45"
                elif previous:
                    phone = previous
            previous = phone
            chunk.append(f"{phone},{contract},{activated}\n")
            if len(chunk) >= 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("count", type=int, help="data rows")
    parser.add_argument("output", type=Path)
    parser.add_argument("--prefix", default="BEE", help="contract id prefix (default BEE)")
    parser.add_argument("--invalid-every", type=int, default=0, help="every K-th row invalid")
    parser.add_argument("--seed", type=int, default=0, help="another seed, other numbers")
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write(
        args.output,
        args.count,
        prefix=args.prefix,
        invalid_every=args.invalid_every,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
