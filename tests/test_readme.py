"""The README's Python examples run, and its worked example of a new layer keeps the contract."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_examples_run():
    blocks = _python_blocks()
    assert len(blocks) >= 2, "the README lost its Python examples"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_readme_layer_example_keeps_the_contract():
    """The "Adding a layer" example: round trip, ladj against the autograd Jacobian, inverse = -forward."""
    namespace: dict = {}
    block = next(b for b in _python_blocks() if "class LeakyReLU" in b)
    exec(compile(block, str(README), "exec"), namespace)
    layer = namespace["LeakyReLU"](0.3)
    x = torch.randn(3, 5, dtype=torch.float64)
    y, ladj = layer(x)
    x_back, ladj_inverse = layer.inverse(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj_inverse, -ladj)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda row: layer(row[None])[0][0], x[i])
        torch.testing.assert_close(torch.linalg.slogdet(jac).logabsdet, ladj[i])
