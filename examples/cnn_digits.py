"""A small convolutional network on scikit-learn's 8x8 handwritten digits (no download needed).

Conv2D(1, 8, 3, padding=1) -> ReLU -> MaxPool2D(2) -> Flatten -> Dense(128, 10), softmax cross-entropy,
trained with L-BFGS on a seeded 75/25 split.  Needs the ``examples`` extra (scikit-learn).  Run::

    python examples/cnn_digits.py                      # prints the held-out accuracy
    layerkit check examples/cnn_digits.py:problem      # the network's gradient, checked on 20 digits
"""

from __future__ import annotations

import time

import numpy as np

import layerkit
from layerkit import Conv2D, Dense, Flatten, MaxPool2D, Network, ReLU, SoftmaxCrossEntropy


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit("this example needs scikit-learn: pip install 'layerkit[examples]'") from None
    data = load_digits()
    X = (data.images / 16.0)[:, None, :, :]  # (m, 1, 8, 8), intensities in [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(X, data.target, test_size=0.25, random_state=seed,
                                                        stratify=data.target)
    return X_train, X_test, y_train, y_test


def network(seed: int = 0) -> Network:
    net = Network([Conv2D(1, 8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(8 * 4 * 4, 10)],
                  loss=SoftmaxCrossEntropy())
    net.init_random(seed)
    return net


def main(lambda_: float = 0.5, max_iter: int = 300, seed: int = 0) -> dict:
    X_train, X_test, y_train, y_test = digits(seed)
    net = network(seed)
    t0 = time.perf_counter()
    result = net.fit(X_train, y_train, lambda_=lambda_, max_iter=max_iter)
    seconds = time.perf_counter() - t0
    accuracy = float(np.mean(net.predict(X_test) == y_test))
    print(f"{result.n_iter} L-BFGS iterations in {seconds:.1f} s, cost {result.cost:.4f}")
    print(f"held-out accuracy: {100 * accuracy:.1f}%")
    return {"accuracy": accuracy, "seconds": seconds, "n_iter": result.n_iter}


def problem(lambda_: float = 0.5) -> layerkit.Problem:
    """The untrained network's gradient on 20 training digits."""
    X_train, _, y_train, _ = digits()
    return layerkit.Problem.from_network(network(), X_train[:20], y_train[:20], lambda_,
                                         name=f"CNN on 20 digits (lambda = {lambda_:g})")


if __name__ == "__main__":
    main()
