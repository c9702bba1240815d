"""A small synthetic detector in ONNX with the board's I/O contract, built without torch.

Tests and `bench/board_latency.py` need a real model to time on machines without torch (an
emulated board, CI): a stack of 3x3 convolutions whose output is reshaped to decoded-style
predictions (1, N, 5 + classes) in [0, 1]. It needs the `onnx` package, which the board install
does not have, so `onnx` is imported only when a model is built (never on the board).
"""
from __future__ import annotations

import numpy as np

ANCHORS_PER_CELL = 3


def toy_detector_onnx(img_size: int = 64, *, num_classes: int = 2, width: int = 16, depth: int = 2,
                      seed: int = 0) -> bytes:
    """Serialized ONNX model: input 'images' (1, 3, S, S) -> output 'predictions' (1, 3*(S/2)^2, 5+C).

    `width` and `depth` scale its cost (about depth * width^2 * 9 * (S/2)^2 multiply-adds).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if img_size < 2 or img_size % 2:
        raise ValueError(f"img_size must be an even number >= 2, got {img_size}")
    if num_classes < 1 or width < 1 or depth < 0:
        raise ValueError(f"need num_classes >= 1, width >= 1, depth >= 0; got {num_classes}, {width}, {depth}")
    rng = np.random.default_rng(seed)
    outputs = ANCHORS_PER_CELL * (5 + num_classes)
    grid = img_size // 2
    inits, nodes = [], []

    def conv(name: str, x: str, c_in: int, c_out: int, k: int, stride: int) -> str:
        w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.w"),
                      numpy_helper.from_array(np.zeros(c_out, np.float32), f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        return f"{name}.y"

    x = conv("stem", "images", 3, width, 3, 2)
    for i in range(depth):
        nodes.append(helper.make_node("Relu", [x], [f"act{i}"]))
        x = conv(f"block{i}", f"act{i}", width, width, 3, 1)
    x = conv("head", x, width, outputs, 1, 1)
    inits.append(numpy_helper.from_array(np.array([1, ANCHORS_PER_CELL, 5 + num_classes, grid * grid], np.int64), "s1"))
    inits.append(numpy_helper.from_array(np.array([1, ANCHORS_PER_CELL * grid * grid, 5 + num_classes], np.int64),
                                         "s2"))
    nodes += [helper.make_node("Reshape", [x, "s1"], ["r1"]),
              helper.make_node("Transpose", ["r1"], ["t1"], perm=[0, 1, 3, 2]),
              helper.make_node("Reshape", ["t1", "s2"], ["r2"]),
              helper.make_node("Sigmoid", ["r2"], ["predictions"])]
    graph = helper.make_graph(
        nodes, "toy_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, img_size, img_size])],
        [helper.make_tensor_value_info("predictions", TensorProto.FLOAT,
                                       [1, ANCHORS_PER_CELL * grid * grid, 5 + num_classes])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgesweep-toy")
    model.ir_version = 9  # readable by older onnxruntime builds on boards
    onnx.checker.check_model(model)
    return model.SerializeToString()
