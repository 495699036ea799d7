"""Course ports as people write them (tests/zoo.py): every correct variant stays clean, every bug is named."""

import numpy as np
import pytest
from zoo import BUGS, gradient_in_c_order, make

import layerkit

EXPECTED = {
    "bias-regularized-in-gradient": ("regularization-mismatch", "lambda/m"),
    "bias-regularized-in-cost": ("regularization-mismatch", "-lambda/m"),
    "penalty-on-wrong-columns": ("regularization-mismatch", "wrong columns"),
    "penalty-starts-late": ("regularization-mismatch", "column 1"),
    "bias-offset": ("constant-offset", "= lambda/m"),
    "no-1-over-m": ("scale-mismatch", "not divided by m"),
    "data-times-2": ("scale-mismatch", "data term"),
    "gradient-times-2": ("scale-mismatch", "2 x numerical"),
    "penalty-halved": ("regularization-mismatch", "-lambda/(2m)"),
    "penalty-over-2m-twice": ("regularization-mismatch", "1/(4m)"),
    "data-missing": ("data-term-missing", "penalty alone"),
    "dropped-example": ("dropped-example", "rank one"),
    "sign-flip": ("sign-flip", "sign"),
}

VARIANTS = [  # sizes, m, lambda, order, cost shape
    ((3, 5, 3), 7, 1.0, "C", "scalar"),
    ((4, 6, 2), 12, 3.0, "F", "(1, 1)"),
    ((5, 3, 4), 9, 0.5, "F", "(1,)"),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_correct_ports_stay_clean(variant):
    sizes, m, lam, order, shape = variant
    fun, theta, blocks, lam, m, order = make("none", sizes, m, lam, order, cost_shape=shape)
    report = layerkit.check_function(fun, theta, blocks=blocks, lambda_=lam, m=m, order=order)
    assert report.passed and not report.findings, report
    for method in ("richardson", "forward"):
        assert layerkit.check_function(fun, theta, method, blocks=blocks, order=order).passed
    directional = layerkit.check_function(fun, theta, blocks=blocks, mode="directional")  # no hints at all
    assert directional.passed and not directional.findings, directional


@pytest.mark.parametrize("bug", [b for b in BUGS if b != "none"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_bug_is_named(bug, variant):
    sizes, m, lam, order, shape = variant
    fun, theta, blocks, lam, m, order = make(bug, sizes, m, lam, order, cost_shape=shape)
    report = layerkit.check_function(fun, theta, blocks=blocks, lambda_=lam, m=m, order=order)
    assert not report.passed
    code, words = EXPECTED[bug]
    hits = [f for f in report.findings if f.code == code and words in f.message]
    assert hits, [(f.code, f.message) for f in report.findings]
    assert not any(f.code == "localized" for f in report.findings)


@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("bug", [b for b in BUGS if b != "none"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_bug_is_named_without_hints(bug, variant, mode):
    """No lambda_, no m, no order: the penalty's coefficient is inferred from the mismatch (in directional
    mode from the localized entries or the blocks' own directions), and an F-order port checked with C-order
    blocks is read in the order that explains it."""
    sizes, m, lam, order, shape = variant
    fun, theta, blocks, lam, m, order = make(bug, sizes, m, lam, order, cost_shape=shape)
    report = layerkit.check_function(fun, theta, blocks=blocks, mode=mode)
    code = EXPECTED[bug][0]
    assert code in report.codes(), [(f.code, f.message) for f in report.findings]


def test_an_f_order_port_read_in_c_order_is_explained_in_fortran_order():
    fun, theta, blocks, lam, m, order = make("bias-regularized-in-gradient", (4, 6, 2), 12, 3.0, "F")
    report = layerkit.check_function(fun, theta, blocks=blocks)  # order='F' not given
    layout = next(f for f in report.findings if f.code == "layout-mismatch")
    assert "Fortran order" in layout.message and "order='F'" in layout.message
    reg = next(f for f in report.findings if f.code == "regularization-mismatch")
    assert "column 0 (the bias column)" in reg.message


@pytest.mark.parametrize("bug", [b for b in BUGS if b != "none"])
def test_each_bug_is_named_in_directional_mode(bug):
    fun, theta, blocks, lam, m, order = make(bug, (4, 6, 2), 12, 3.0, "F", cost_shape="(1, 1)")
    report = layerkit.check_function(fun, theta, blocks=blocks, lambda_=lam, m=m, order=order, mode="directional")
    assert EXPECTED[bug][0] in report.codes(), [(f.code, f.message) for f in report.findings]


def test_localized_is_said_only_of_a_proper_part():
    fun, theta, blocks, lam, m, order = make("none", (3, 2, 2), 5, 1.0)

    def rows_wrong(t):  # every entry of Theta2 (2 rows) slightly off: no confinement to claim
        J, g = fun(t)
        g = g.copy()
        g[-6:] += 1e-3 * np.arange(1, 7)
        return J, g

    report = layerkit.check_function(rows_wrong, theta, blocks=blocks)
    assert not report.passed
    assert not any(f.code == "localized" for f in report.findings)


def test_c_order_blocks_for_an_f_order_port_say_which_order():
    fun, theta, blocks, lam, m, order = make("none", (3, 5, 3), 7, 1.0, "F")

    report = layerkit.check_function(gradient_in_c_order(fun, blocks), theta, blocks=blocks, order="F")
    f = next(f for f in report.findings if f.code == "layout-mismatch")
    assert "C (row-major" in f.message and "Fortran" in f.message


def test_per_block_gradients_and_a_column_x0():
    fun, theta, blocks, lam, m, order = make("bias-regularized-in-cost", (3, 5, 3), 7, 1.0, "F",
                                               cost_shape="(1, 1)")
    sizes = [a * b for a, b in blocks.values()]

    def per_block(t):
        J, g = fun(t)
        g = np.asarray(g).reshape(-1)
        return J, g[:sizes[0]].reshape(blocks["Theta1"], order="F"), g[sizes[0]:].reshape(blocks["Theta2"], order="F")

    report = layerkit.check_function(per_block, theta.reshape(-1, 1), blocks=blocks, lambda_=lam, m=m, order="F")
    f = next(f for f in report.findings if f.code == "regularization-mismatch")
    assert f.blocks == ("Theta2",) and "column 0" in f.message
    with pytest.raises(layerkit.TargetError, match="block Theta2"):
        layerkit.check_function(lambda t: (1.0, np.zeros(20), np.zeros(3)), theta, blocks=blocks)


@pytest.mark.slow
@pytest.mark.parametrize("bug, code", [("data-missing", "data-term-missing"),
                                       ("penalty-on-wrong-columns", "regularization-mismatch"),
                                       ("gradient-times-2", "scale-mismatch")])
def test_block_causes_are_named_at_the_course_size_in_auto_mode(bug, code):
    """400-25-10, m = 5000: auto mode runs the directional check, whose spread blocks still get a cause."""
    fun, theta, blocks, lam, m, order = make(bug, (400, 25, 10), 5000, 1.0, "F")
    report = layerkit.check_function(fun, theta, blocks=blocks, order=order, lambda_=lam, m=m)
    assert report.mode == "directional" and code in report.codes(), [(f.code, f.message) for f in report.findings]


def test_square_blocks_unrolled_in_the_other_order_are_named_from_their_localized_entries():
    # 5x5 and 6x6: the re-reading is a transpose, so the diagonal passes and directional mode localizes only
    # the entries off it; each one's counterpart is localized too, and that is enough to name the layout
    fun, theta, blocks, lam, m, order = make("none", (4, 5, 6), 7, 1.0, "F")
    for mode in ("full", "directional"):
        report = layerkit.check_function(gradient_in_c_order(fun, blocks), theta, blocks=blocks, order="F", mode=mode)
        assert [f.code for f in report.findings] == ["layout-mismatch", "layout-mismatch"], report


@pytest.mark.slow
@pytest.mark.parametrize("bug, code, words", [("no-1-over-m", "scale-mismatch", "not divided by m"),
                                              ("c-ravel", "layout-mismatch", "unrolled in C"),
                                              ("data-missing", "data-term-missing", "penalty alone"),
                                              ("penalty-on-wrong-columns", "regularization-mismatch", "wrong columns")])
def test_every_failing_block_gets_its_cause_at_the_course_size_without_hints(bug, code, words):
    """400-25-10, m = 5000, no lambda_ and no m: auto mode runs the directional check; every failing block is
    named, the penalty's coefficient inferred along the blocks' own directions."""
    fun, theta, blocks, lam, m, order = make("none" if bug == "c-ravel" else bug, (400, 25, 10), 5000, 1.0, "F")
    if bug == "c-ravel":
        fun = gradient_in_c_order(fun, blocks)
    report = layerkit.check_function(fun, theta, blocks=blocks, order=order)
    assert report.mode == "directional"
    named = {b for f in report.findings if f.code == code and words in f.message for b in f.blocks}
    assert named == set(report.failed_blocks) and named, [(f.code, f.message) for f in report.findings]
