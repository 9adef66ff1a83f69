"""cnnkit.optim: the learning-rate schedule and the Nesterov SGD with lookahead, each checked
against a hand-computed expectation."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.env import import_keras

keras = import_keras()


def test_schedule_warms_up_then_decays_linearly() -> None:
    from cnnkit.optim import WarmupLinearDecay

    schedule = WarmupLinearDecay(peak=2.0, total_steps=100, warmup=0.2, start=0.2)
    values = [float(schedule(s)) for s in (0, 10, 20, 60, 100, 120)]
    np.testing.assert_allclose(values, [0.4, 1.2, 2.0, 1.0, 0.0, 0.0], atol=1e-6)
    # airbench's triangle: 0.2 -> 1 at 23 % of the steps -> 0.07 at the end.
    schedule = WarmupLinearDecay(peak=1.0, total_steps=100, warmup=0.23, start=0.2, end=0.07)
    values = [float(schedule(s)) for s in (0, 23, 50, 100, 130)]
    np.testing.assert_allclose(values, [0.2, 1.0, 1 - 0.93 * 27 / 77, 0.07, 0.07], atol=1e-6)


def _torch_style_reference(w0, grads, lr, mult, decay, peak, momentum, lookahead, total):  # type: ignore[no-untyped-def]
    """PyTorch SGD(nesterov, weight_decay=decay/(peak*mult)) plus airbench's lookahead, in NumPy."""
    w, buf, slow = w0.copy(), np.zeros_like(w0), w0.copy()
    for step, g in enumerate(grads, start=1):
        g = g + decay / (peak * mult) * w
        buf = momentum * buf + g
        w = w - lr * mult * (g + momentum * buf)
        if step % lookahead == 0 or step == total:
            keep = 1.0 if step == total else 0.95**5 * (step / total) ** 3
            slow = slow + (1 - keep) * (w - slow)
            w = slow.copy()
    return w


@pytest.mark.parametrize("mult", [1.0, 64.0])
def test_nesterov_sgd_matches_the_pytorch_formula_with_lookahead(mult: float) -> None:
    from cnnkit.optim import NesterovSGD

    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5,)).astype("float32")
    grads = [rng.normal(size=(5,)).astype("float32") for _ in range(7)]
    variable = keras.Variable(w0, name="beta" if mult != 1.0 else "kernel")
    optimizer = NesterovSGD(
        0.01, peak=0.01, momentum=0.85, decay=0.003, multipliers={"beta": 64.0},
        lookahead_every=3, total_steps=7,
    )  # fmt: skip
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
    expected = _torch_style_reference(w0, grads, 0.01, mult, 0.003, 0.01, 0.85, 3, 7)
    np.testing.assert_allclose(np.asarray(variable), expected, rtol=1e-5, atol=1e-6)


def test_frozen_variables_stop_moving_after_their_step() -> None:
    from cnnkit.optim import NesterovSGD

    frozen = keras.Variable(np.ones(3, "float32"), name="bias")
    optimizer = NesterovSGD(0.1, peak=0.1, momentum=0.5, freeze_after={"bias": 2})
    values = []
    for _ in range(4):
        optimizer.apply([keras.ops.ones((3,))], [frozen])
        values.append(float(np.asarray(frozen)[0]))
    assert values[0] < 1.0 and values[1] < values[0]  # steps 0 and 1 move it
    assert values[2] == values[1] == values[3]  # from step 2 on it stays
