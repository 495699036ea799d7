"""Behaviour kept: every case of the golden corpus (tests/golden.py) reproduces its recorded report.

On the machine that recorded them (the same :func:`golden.fingerprint`), numbers are compared to within 1e-9
relative and everything else -- verdicts, codes, messages, notes, evaluation counts, the rendered text --
exactly.  ``LAYERKIT_GOLDEN_EXACT=1`` compares the numbers bit for bit too.  A machine whose vector units
and BLAS round differently moves measured noise, tolerances and the cases built on an exact kink; there each
case must still reach its recorded verdict, name the same blocks and make the same findings
(:func:`golden.verdicts`).
"""

import json
import os

import pytest
from golden import CASES, MACHINE, RECORDS, differences, fingerprint, run, verdicts

RECORDED = json.loads(RECORDS.read_text())
RTOL = 0.0 if os.environ.get("LAYERKIT_GOLDEN_EXACT") else 1e-9
SAME_MACHINE = MACHINE.exists() and json.loads(MACHINE.read_text()) == fingerprint()


def test_the_corpus_and_the_records_name_the_same_cases():
    assert sorted(CASES) == sorted(RECORDED)
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_case_reproduces_its_record(name):
    if SAME_MACHINE or os.environ.get("LAYERKIT_GOLDEN_EXACT"):
        found = differences(RECORDED[name], run(name), name, RTOL)
    else:
        found = differences(verdicts(RECORDED[name]), verdicts(run(name)), name)
    assert not found, "\n".join(found[:20]) + (f"\n... {len(found) - 20} more" if len(found) > 20 else "")
