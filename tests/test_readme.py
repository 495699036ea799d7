"""Documentation that runs: every ``python`` block of the README, as written, in a fresh interpreter; the
set-up commands it gives; and the reference site's pages it points to."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_readme_has_python_blocks_and_stays_short():
    assert len(BLOCKS) >= 2
    assert len(README.splitlines()) <= 320


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_each_python_block_runs_as_written(k, tmp_path):
    out = subprocess.run([sys.executable, "-c", BLOCKS[k]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def test_the_set_up_commands_are_the_ones_ci_runs():
    assert "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/layerkit check" in README
    assert "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/pytest" in README


def test_the_pages_it_points_to_exist_and_are_in_the_site():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in re.findall(r"`docs/([\w-]+\.md)`", README):
        assert (ROOT / "docs" / page).is_file(), page
        assert page in nav, page


def test_the_course_function_shown_gives_the_output_shown(tmp_path):
    shown = README.split("$ layerkit check examples/course_function.py:nnCost --lambda 3\n", 1)[1].split("```")[0]
    # run from elsewhere: from the checkout, its layerkit/ folder (without the CLI) would shadow the install
    out = subprocess.run([sys.executable, "-m", "layerkit.cli.app", "check",
                          f"{ROOT / 'examples' / 'course_function.py'}:nnCost", "--lambda", "3"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    # the words and codes as shown; the numbers as printed on this machine (the last digits of rounding-level
    # differences depend on the CPU's arithmetic)
    number = re.compile(r"-?\d+(\.\d+)?(e[-+]\d+)?")
    assert number.sub("#", out.stdout.strip()) == number.sub("#", shown.strip())
