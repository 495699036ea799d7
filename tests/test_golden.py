"""Behaviour kept: every case of the golden corpus (tests/golden.py) reproduces its recorded report.

Numbers are compared to within 1e-9 relative (a BLAS on another CPU may sum in another order and move the
last bits); everything else -- verdicts, codes, messages, notes, evaluation counts, the rendered text -- exactly.
``LAYERKIT_GOLDEN_EXACT=1`` compares the numbers bit for bit too (on the machine that recorded them).
"""

import json
import os

import pytest
from golden import CASES, RECORDS, differences, run

RECORDED = json.loads(RECORDS.read_text())
RTOL = 0.0 if os.environ.get("LAYERKIT_GOLDEN_EXACT") else 1e-9


def test_the_corpus_and_the_records_name_the_same_cases():
    assert sorted(CASES) == sorted(RECORDED)
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_case_reproduces_its_record(name):
    found = differences(RECORDED[name], run(name), name, RTOL)
    assert not found, "\n".join(found[:20]) + (f"\n... {len(found) - 20} more" if len(found) > 20 else "")
