"""layerkit.check_backward: CS231n-style layer function pairs, checked with no wrapper."""

import functools

import layer_pairs as lf
import numpy as np
import pytest

import layerkit
from layerkit import InputError, TargetError, check_backward

rng = np.random.default_rng(0)
X, W, B = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 4)), rng.standard_normal(4)


@pytest.mark.parametrize("method", ["central", "forward", "richardson", "complex-step"])
def test_a_correct_affine_pair_passes_with_a_block_per_input(method):
    report = check_backward(lf.affine_forward, lf.affine_backward, {"x": X, "w": W, "b": B}, method, mode="full")
    assert report.passed, str(report)
    assert [b.name for b in report.blocks] == ["x", "w", "b"]
    assert [tuple(b.shape) for b in report.blocks] == [(6, 2, 3), (6, 4), (4,)]


def test_inputs_are_left_as_they_were_and_the_directional_mode_runs():
    x = X.copy()
    report = check_backward(lf.affine_forward, lf.affine_backward, {"x": x, "w": W, "b": B}, mode="directional")
    assert report.passed and np.array_equal(x, X)


def test_a_mean_where_a_sum_is_meant_is_a_scale_on_db():
    report = check_backward(lf.affine_forward, lf.affine_backward_db_mean, {"x": X, "w": W, "b": B})
    assert report.failed_blocks == ["b"]
    scale = [f for f in report.findings if f.code == "scale-mismatch"]
    assert scale and "0.166667" in scale[0].message  # 1/6: divided by the batch size


def test_shape_slips_are_named():
    with pytest.raises(TargetError, match="not summed over the batch"):
        check_backward(lf.affine_forward, lf.affine_backward_db_not_summed, {"x": X, "w": W, "b": B})
    with pytest.raises(TargetError, match="transposed"):
        check_backward(lf.affine_forward, lf.affine_backward_dw_transposed, {"x": X, "w": W, "b": B})


def test_a_single_input_without_cache_names_and_partial():
    x = rng.standard_normal((5, 4)) + 0.5
    assert check_backward(lf.relu_forward, lf.relu_backward, {"x": x}).passed
    fwd = functools.partial(lf.batchnorm_forward, eps=1e-3)
    grads_by_name = check_backward(fwd, lf.batchnorm_backward,
                                   {"x": rng.standard_normal((8, 3)), "gamma": rng.standard_normal(3),
                                    "beta": rng.standard_normal(3)})
    assert grads_by_name.passed, str(grads_by_name)


def test_batchnorm_without_its_mean_and_variance_terms_fails_on_x_only_and_is_named():
    report = check_backward(lf.batchnorm_forward, lf.batchnorm_backward_no_mean_terms,
                            {"x": rng.standard_normal((8, 3)), "gamma": rng.standard_normal(3),
                             "beta": rng.standard_normal(3)})
    assert report.failed_blocks == ["x"]
    assert [(f.code, f.blocks) for f in report.findings] == [("batch-statistics-missing", ("x",))]


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="inputs"):
        check_backward(lf.relu_forward, lf.relu_backward, {"x": np.arange(4)})
    with pytest.raises(InputError, match="dout"):
        check_backward(lf.relu_forward, lf.relu_backward, {"x": X}, dout=np.ones(3))
    with pytest.raises(TargetError, match="expected 3"):
        check_backward(lf.affine_forward, lambda dout, cache: lf.affine_backward(dout, cache)[:2],
                       {"x": X, "w": W, "b": B})


def test_a_problem_from_backward_for_the_cli():
    p = layerkit.Problem.from_backward(lf.affine_forward, lf.affine_backward, {"x": X, "w": W, "b": B})
    assert p.name == "affine_forward" and p.check().passed


def _planted(backward, which, factor=1.01):
    """``backward`` with input ``which``'s gradient scaled by ``factor`` (a planted error)."""
    def wrong(dout, *cache):
        grads = list(backward(dout, *cache))
        grads[which] = grads[which] * factor
        return tuple(grads)
    return wrong


def _six():
    import layer_functions as ex

    r = np.random.default_rng(4)
    x = r.standard_normal((3, 2, 6, 6))
    return [
        (ex.affine_forward, ex.affine_backward,
         {"x": r.standard_normal((5, 2, 3)), "w": r.standard_normal((6, 4)), "b": r.standard_normal(4)}),
        (ex.relu_forward, ex.relu_backward, {"x": r.standard_normal((5, 4)) + 0.1}),
        (functools.partial(ex.conv_forward_naive, conv_param={"stride": 1, "pad": 1}), ex.conv_backward_naive,
         {"x": x, "w": r.standard_normal((2, 2, 3, 3)), "b": r.standard_normal(2)}),
        (functools.partial(ex.max_pool_forward_naive, pool_param={"pool_height": 2, "pool_width": 2, "stride": 2}),
         ex.max_pool_backward_naive, {"x": x}),
        (ex.batchnorm_forward, ex.batchnorm_backward,
         {"x": r.standard_normal((8, 3)), "gamma": r.standard_normal(3), "beta": r.standard_normal(3)}),
        (functools.partial(ex.dropout_forward, dropout_param={"p": 0.6, "seed": 1}), ex.dropout_backward,
         {"x": r.standard_normal((6, 5))}),
    ]


@pytest.mark.parametrize("k", range(6))
def test_the_six_pairs_pass_and_a_planted_error_fails_in_its_own_input(k):
    forward, backward, inputs = _six()[k]
    kept = {n: a.copy() for n, a in inputs.items()}
    assert check_backward(forward, backward, inputs).passed
    for which, name in enumerate(inputs):
        report = check_backward(forward, _planted(backward, which), inputs)
        assert not report.passed and report.failed_blocks == [name], (k, name, str(report))
    assert all(np.array_equal(inputs[n], kept[n]) for n in inputs)  # bit-identical


def test_inputs_are_untouched_when_forward_raises_or_writes_into_them():
    x = rng.standard_normal((4, 3))
    kept = x.copy()
    calls = []

    def scribbling(a):  # writes into its input, then raises on the third call
        calls.append(1)
        a *= 2
        if len(calls) == 3:
            raise ValueError("forward failed")
        return a * 1.0

    with pytest.raises(ValueError, match="forward failed"):
        check_backward(scribbling, lambda dout: (dout * 2,), {"x": x})
    assert np.array_equal(x, kept)
