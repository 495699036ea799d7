"""Checks spread over a Dask cluster (the dask extra): the same report as the serial run, whatever the workers."""

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import layerkit  # noqa: E402
from layerkit.testing import plant_gradient_error  # noqa: E402


def rosen(x):
    g = np.zeros_like(x)
    g[:-1] = -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)), g


def rosen_wrong(x):
    J, g = rosen(x)
    g[7] *= 1 + 1e-4
    return J, g


def raises_on_axis_5(x):
    if x[5] != X0[5]:
        raise ValueError("the model diverged at this point")
    return rosen(x)


X0 = np.linspace(-1.0, 1.0, 24)


@pytest.fixture(scope="module")
def clusters():
    """Two in-process clusters (threads: fast to start in CI), of 1 and 2 workers."""
    out = []
    for n in (1, 2):
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=False,
                                           dashboard_address=":0")
        out.append((cluster, distributed.Client(cluster)))
    yield [client.get_executor() for _, client in out]
    for cluster, client in out:
        client.close()
        cluster.close()


def _same(a, b):
    return np.array_equal(a.numerical, b.numerical, equal_nan=True) and a.passed == b.passed \
        and a.n_evals == b.n_evals and [f.code for f in a.findings] == [f.code for f in b.findings]


@pytest.mark.parametrize("fun", [rosen, rosen_wrong])
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_cluster_gives_the_serial_report_bit_for_bit(clusters, fun, mode):
    serial = layerkit.check_function(fun, X0, mode=mode, seed=3)
    for executor in clusters:
        spread = layerkit.check_function(fun, X0, mode=mode, seed=3, executor=executor)
        assert _same(serial, spread), (mode, fun.__name__)
    assert serial.passed == (fun is rosen)


def test_a_network_check_spread_over_a_cluster(clusters):
    net = layerkit.Network.from_sizes([4, 5, 3], seed=1)
    X, y = np.random.default_rng(0).standard_normal((9, 4)), np.arange(9) % 3
    bad = plant_gradient_error(net, 11, 1e-3)
    subject_fun = bad.objective(X, y, 1.0)
    serial = layerkit.check_function(subject_fun, bad.params.copy(), blocks={"Theta1": (5, 5), "Theta2": (3, 6)})
    spread = layerkit.check_function(subject_fun, bad.params.copy(), blocks={"Theta1": (5, 5), "Theta2": (3, 6)},
                                     executor=clusters[1])
    assert _same(serial, spread) and not spread.passed and spread.worst[0].flat_index == 11


def test_a_target_that_raises_on_a_worker_gives_the_serial_error(clusters):
    with pytest.raises(ValueError) as serial:
        layerkit.check_function(raises_on_axis_5, X0, mode="full")
    with pytest.raises(ValueError) as spread:
        layerkit.check_function(raises_on_axis_5, X0, mode="full", executor=clusters[1])
    assert str(spread.value) == str(serial.value) == "the model diverged at this point"
