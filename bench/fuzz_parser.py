"""A long random campaign against the certificate parser, run by hand: never a crash, always a reason.

python bench/fuzz_parser.py [--examples 30000]
Mutates a plain and an extension-rich certificate (random bytes), then flips every single bit of both.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gunicorn_cert_exporter.sources import certs
from tests.test_hostile_input import _RICH_DER, _SAMPLE_DER, _well_formed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=30_000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    samples = [_SAMPLE_DER, _RICH_DER]

    @settings(max_examples=args.examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def mutate(data: st.DataObject) -> None:
        blob = bytearray(samples[data.draw(st.integers(0, len(samples) - 1))])
        for _ in range(data.draw(st.integers(1, 3))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
        _well_formed(certs.parse(bytes(blob)))

    started = time.monotonic()
    mutate()
    print(f"{args.examples} random mutations: no crash ({time.monotonic() - started:.0f} s)")
    flips = 0
    for blob in samples:
        for position in range(len(blob)):
            for bit in range(8):
                mutated = bytearray(blob)
                mutated[position] ^= 1 << bit
                _well_formed(certs.parse(bytes(mutated)))
                flips += 1
    print(f"{flips} single-bit flips: no crash")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
