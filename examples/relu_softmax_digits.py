"""A ReLU + softmax classifier on scikit-learn's 8x8 handwritten digits (bundled: no download).

Network: 64 -> 100 (ReLU) -> 10 logits, softmax cross-entropy, L2 penalty (bias columns exempt), trained
with L-BFGS.  Needs the ``examples`` extra:  pip install 'layerkit[examples]'.

    python examples/relu_softmax_digits.py                          # train, print held-out accuracy
    layerkit check examples/relu_softmax_digits.py:problem          # check its gradient
"""

from __future__ import annotations

import time

import numpy as np

import layerkit
from layerkit import Dense, Network, ReLU, SoftmaxCrossEntropy


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits, pixels scaled to [0, 1], split 75/25 (stratified, seeded)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit("this example needs scikit-learn: pip install 'layerkit[examples]'") from None
    digits = load_digits()
    return train_test_split(digits.data / 16.0, digits.target, test_size=0.25, random_state=seed,
                            stratify=digits.target)


def network(seed: int = 0) -> Network:
    net = Network([Dense(64, 100), ReLU(), Dense(100, 10)], loss=SoftmaxCrossEntropy())
    net.init_random(seed)
    return net


def problem() -> layerkit.Problem:
    """The gradient check of the untrained network on 200 training digits, lambda = 1."""
    X_train, _, y_train, _ = data()
    return layerkit.Problem.from_network(network(), X_train[:200], y_train[:200], lambda_=1.0,
                                         name="ReLU + softmax on digits")


def main(lambda_: float = 1.0, max_iter: int = 300, seed: int = 0) -> dict:
    X_train, X_test, y_train, y_test = data(seed)
    net = network(seed)
    report = layerkit.check_network(net, X_train[:200], y_train[:200], lambda_)
    print(f"gradient check: {report.verdict}")
    t0 = time.perf_counter()
    result = net.fit(X_train, y_train, lambda_=lambda_, max_iter=max_iter)
    seconds = time.perf_counter() - t0
    accuracy = float(np.mean(net.predict(X_test) == y_test))
    print(f"64-100-10 ReLU/softmax network, lambda = {lambda_:g}: cost {result.cost:.4f} after {result.n_iter} "
          f"L-BFGS iterations in {seconds:.1f} s; held-out accuracy {accuracy:.2%} on {len(y_test)} digits")
    return {"accuracy": accuracy, "seconds": seconds, "report": report}


if __name__ == "__main__":
    main()
