"""Regression with the squared error: scikit-learn's bundled diabetes data (442 patients, 10 features).

Network: 10 -> 8 (Tanh) -> 1 linear output, mean squared error, L2 penalty; against a linear least-squares
baseline on the same splits.  R^2 is reported on held-out patients, averaged over ten seeded 75/25 splits:
the data are nearly linear (a linear model explains about 47% of the variance, and 331 training patients
leave little room for more), so the network's gain is small, about 0.01, and not on every split; a single
split would mostly show its noise.  Needs the ``examples`` extra.

    python examples/diabetes_regression.py
    layerkit check examples/diabetes_regression.py:problem
"""

from __future__ import annotations

import numpy as np

import layerkit
from layerkit import Dense, MeanSquaredError, Network, Tanh


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features scaled to unit variance and the target standardized, both with training statistics only."""
    try:
        from sklearn.datasets import load_diabetes
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit("this example needs scikit-learn: pip install 'layerkit[examples]'") from None
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed)
    mx, sx = X_train.mean(axis=0), X_train.std(axis=0)
    my, sy = y_train.mean(), y_train.std()
    return (X_train - mx) / sx, (X_test - mx) / sx, (y_train - my) / sy, (y_test - my) / sy


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def network(seed: int = 0) -> Network:
    net = Network([Dense(10, 8), Tanh(), Dense(8, 1)], loss=MeanSquaredError())
    net.init_random(seed)
    return net


def problem() -> layerkit.Problem:
    """The gradient check of the untrained network on the training patients, lambda = 1."""
    X_train, _, y_train, _ = data()
    return layerkit.Problem.from_network(network(), X_train, y_train, lambda_=1.0, name="diabetes regression")


def main(lambda_: float = 10.0, max_iter: int = 300, splits: int = 10) -> dict:
    """Train on ``splits`` seeded 75/25 splits; the mean held-out R^2 of the network and of the linear fit."""
    net = network(0)
    X_train, _, y_train, _ = data(0)
    report = layerkit.check_network(net, X_train, y_train, lambda_)
    print(f"gradient check: {report.verdict}")
    scores, linear = [], []
    for seed in range(splits):
        X_train, X_test, y_train, y_test = data(seed)
        A = np.hstack([np.ones((len(X_train), 1)), X_train])
        coef = np.linalg.lstsq(A, y_train, rcond=None)[0]
        linear.append(r2(y_test, np.hstack([np.ones((len(X_test), 1)), X_test]) @ coef))
        net = network(seed)
        net.fit(X_train, y_train, lambda_=lambda_, max_iter=max_iter)
        scores.append(r2(y_test, net.predict(X_test)))
    wins = sum(a > b for a, b in zip(scores, linear))
    print(f"10-8-1 tanh network, lambda = {lambda_:g}, {splits} splits: held-out R^2 {np.mean(scores):.3f} "
          f"(+- {np.std(scores):.3f}); linear least squares {np.mean(linear):.3f} (+- {np.std(linear):.3f}); "
          f"the network is ahead on {wins} of {splits} splits")
    return {"r2": float(np.mean(scores)), "linear_r2": float(np.mean(linear)), "wins": wins, "report": report}


if __name__ == "__main__":
    main()
