"""TFLite's int8 softmax (fixed-point exp), in numpy. Filled in once the oracle study lands."""
from __future__ import annotations


def softmax_params(input_scale: float, beta: float = 1.0) -> dict:
    raise NotImplementedError("int8 softmax parameters")


def softmax_int8(x, params):
    raise NotImplementedError("int8 softmax")
