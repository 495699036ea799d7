import numpy as np
import pytest

import layerkit
from layerkit import InputError, ParameterLayout


def test_blocks_are_laid_out_in_order_and_c_order():
    layout = ParameterLayout.from_shapes({"A": (2, 3), "b": (4,), "C": (3, 2)})
    assert [b.name for b in layout.blocks] == ["A", "b", "C"]
    assert [(b.start, b.stop) for b in layout.blocks] == [(0, 6), (6, 10), (10, 16)]
    assert layout.locate(4) == ("A", (1, 1))
    assert layout.locate(12) == ("C", (1, 0))
    assert layout.label(7) == "b[1]"


def test_views_share_memory_with_the_flat_vector():
    layout = ParameterLayout.from_shapes({"A": (2, 3), "B": (3, 2)})
    flat = np.arange(12.0)
    views = layout.views(flat)
    assert all(np.shares_memory(v, flat) for v in views.values())
    views["B"][1, 0] = -1.0
    assert flat[8] == -1.0


def test_fortran_round_trip_and_matlab_order():
    layout = ParameterLayout.from_shapes({"T1": (2, 3), "T2": (3, 2)})
    T1, T2 = np.arange(6.0).reshape(2, 3), 10 + np.arange(6.0).reshape(3, 2)
    c_vec = np.concatenate([T1.ravel(), T2.ravel()])
    f_vec = np.concatenate([T1.ravel(order="F"), T2.ravel(order="F")])  # MATLAB's [T1(:); T2(:)]
    np.testing.assert_array_equal(layout.convert(c_vec, "C", "F"), f_vec)
    np.testing.assert_array_equal(layout.convert(f_vec, "F", "C"), c_vec)


def test_network_params_and_grads_are_single_buffers_with_views(debug_problem):
    net, X, y = debug_problem
    assert net.params.ndim == 1 and net.params.flags.c_contiguous and net.params.size == 38
    for layer, block in zip(net.layers[::2], net.blocks):
        assert np.shares_memory(layer.Theta, net.params)
        assert np.shares_memory(layer.dTheta, net.grads)
        assert layer.Theta.shape == block.shape
    net.cost_and_gradient(X, y, 1.0)
    np.testing.assert_array_equal(net.layers[2].dTheta.ravel(), net.grads[net.blocks[1].slice])


def test_setting_params_copies_into_the_buffer(debug_problem):
    net, _, _ = debug_problem
    buffer = net.params
    new = np.linspace(-1, 1, net.size)
    net.params = new
    assert net.params is buffer
    new[0] = 99.0
    assert net.params[0] == -1.0
    assert net.layers[0].Theta[0, 0] == -1.0


def test_network_fortran_import_export(debug_problem):
    net, _, _ = debug_problem
    T1, T2 = net.layers[0].Theta.copy(), net.layers[2].Theta.copy()
    f_vec = net.get_params(order="F")
    np.testing.assert_array_equal(f_vec, np.concatenate([T1.ravel(order="F"), T2.ravel(order="F")]))
    net.set_params(np.zeros(net.size))
    net.set_params(f_vec, order="F")
    np.testing.assert_array_equal(net.layers[0].Theta, T1)
    np.testing.assert_array_equal(net.layers[2].Theta, T2)


@pytest.mark.parametrize("value, fragment", [
    (np.zeros(37), "38 entries"),
    (np.zeros((38, 1)), "1-D vector of 38"),
    (np.zeros(38, dtype=np.float32), "dtype float64"),
    (np.r_[np.zeros(37), np.nan], "finite values"),
])
def test_bad_parameter_vectors_are_refused_with_specifics(debug_problem, value, fragment):
    net, _, _ = debug_problem
    before = net.params.copy()
    with pytest.raises(InputError, match="params") as info:
        net.params = value
    assert fragment in str(info.value)
    np.testing.assert_array_equal(net.params, before)


def test_nonfinite_parameter_error_names_the_entry(debug_problem):
    net, _, _ = debug_problem
    bad = np.zeros(38)
    bad[23] = np.inf
    with pytest.raises(InputError, match=r"Theta2\[0, 3\]"):
        net.set_params(bad)


def test_blocks_expose_name_shape_and_slice(debug_problem):
    net, _, _ = debug_problem
    b1, b2 = net.blocks
    assert (b1.name, b1.shape, b1.slice) == ("Theta1", (5, 4), slice(0, 20))
    assert (b2.name, b2.shape, b2.slice) == ("Theta2", (3, 6), slice(20, 38))
    assert repr(layerkit.ParameterLayout.from_shapes({"a": (2,)})) == "ParameterLayout(a(2,); size=2)"
