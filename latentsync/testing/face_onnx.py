"""Random and constant ONNX graphs with the input/output signatures of InsightFace's buffalo_l models.

The real SCRFD `det_10g.onnx` and `2d106det.onnx` cannot be downloaded in CI; these graphs have the same inputs
and outputs, so the InsightFace backend's pre- and post-processing runs on them. Needs the `onnx` package
(the `dev` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..face.detectors.insightface import STRIDES

OPSET = [helper.make_opsetid("", 13)]

def _const_plus_zero_input(name: str, value: np.ndarray, nodes: list, inits: list) -> None:
    """Output `name` = constant `value` + 0 * mean(input): constant, but the graph still reads its input."""
    inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_value"))
    nodes.append(helper.make_node("Add", [f"{name}_value", "zero"], [name]))


def _zero_from_input(nodes: list, inits: list) -> None:
    inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero_scale"))
    nodes.append(helper.make_node("ReduceMean", ["input.1"], ["input_mean"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["input_mean", "zero_scale"], ["zero"]))


def _save(nodes, inits, inputs, outputs, path: Path) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def constant_scrfd(path: Path, size: int, heads: dict[int, tuple[np.ndarray, np.ndarray]]) -> Path:
    """An SCRFD-shaped graph with a fixed (1, 3, size, size) input whose outputs are the given constants.

    heads: stride -> (scores (N, 1), distances (N, 4)); keypoint outputs are zeros.
    """
    nodes, inits = [], []
    _zero_from_input(nodes, inits)
    names = [f"score_{s}" for s in STRIDES] + [f"bbox_{s}" for s in STRIDES] + [f"kps_{s}" for s in STRIDES]
    for s in STRIDES:
        scores, dist = heads[s]
        _const_plus_zero_input(f"score_{s}", scores, nodes, inits)
        _const_plus_zero_input(f"bbox_{s}", dist, nodes, inits)
        _const_plus_zero_input(f"kps_{s}", np.zeros((len(scores), 10)), nodes, inits)
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])]
    widths = {"score": 1, "bbox": 4, "kps": 10}
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", widths[n.split("_")[0]]]) for n in names]
    return _save(nodes, inits, inputs, outputs, path)


def constant_landmarks(path: Path, pred: np.ndarray) -> Path:
    """A 2d106det-shaped graph: input (1, 3, 192, 192), output (1, 212) = `pred`."""
    nodes, inits = [], []
    _zero_from_input(nodes, inits)
    _const_plus_zero_input("fc1", pred.reshape(1, 212), nodes, inits)
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [None, 3, 192, 192])]
    outputs = [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [None, 212])]
    return _save(nodes, inits, inputs, outputs, path)


def _conv(nodes, inits, rng, x: str, name: str, cin: int, cout: int, k: int, stride: int, relu: bool = True) -> str:
    w = rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")]
    nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], kernel_shape=[k, k],
                                  strides=[stride, stride], pads=[k // 2] * 4))
    if not relu:
        return name
    nodes.append(helper.make_node("Relu", [name], [f"{name}_r"]))
    return f"{name}_r"


def random_scrfd(path: Path, channels: int = 8, depth: int = 0, score_bias: float = 0.0, seed: int = 0) -> Path:
    """A randomly initialised SCRFD-shaped network: input (1, 3, ?, ?), 9 outputs (N, 1/4/10) for strides
    8/16/32 with 2 anchors per location. `depth` extra 3x3 convolutions at stride 8 scale the compute."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = _conv(nodes, inits, rng, "input.1", "stem1", 3, channels, 3, 2)
    x = _conv(nodes, inits, rng, x, "stem2", channels, channels, 3, 2)
    x = _conv(nodes, inits, rng, x, "s8", channels, channels, 3, 2)
    for i in range(depth):
        x = _conv(nodes, inits, rng, x, f"s8_{i}", channels, channels, 3, 1)
    feats = {8: x}
    feats[16] = _conv(nodes, inits, rng, feats[8], "s16", channels, channels, 3, 2)
    feats[32] = _conv(nodes, inits, rng, feats[16], "s32", channels, channels, 3, 2)
    outputs = {}
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for s in STRIDES:
            head = _conv(nodes, inits, rng, feats[s], f"{kind}{s}", channels, 2 * width, 1, 1, relu=False)
            if kind == "score":
                inits.append(numpy_helper.from_array(np.float32(score_bias), f"{head}_bias"))
                nodes.append(helper.make_node("Add", [head, f"{head}_bias"], [f"{head}_shift"]))
                nodes.append(helper.make_node("Sigmoid", [f"{head}_shift"], [f"{head}_sig"]))
                head = f"{head}_sig"
            elif kind == "bbox":  # positive distances of about one stride, as a trained head gives
                nodes.append(helper.make_node("Exp", [head], [f"{head}_exp"]))
                head = f"{head}_exp"
            nodes.append(helper.make_node("Transpose", [head], [f"{head}_t"], perm=[0, 2, 3, 1]))
            inits.append(numpy_helper.from_array(np.array([-1, width], np.int64), f"{kind}{s}_shape"))
            nodes.append(helper.make_node("Reshape", [f"{head}_t", f"{kind}{s}_shape"], [f"{kind}_{s}"]))
            outputs[f"{kind}_{s}"] = width
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", w]) for n, w in outputs.items()]
    return _save(nodes, inits, inputs, outs, path)


def random_landmarks(path: Path, channels: int = 8, seed: int = 1) -> Path:
    """A randomly initialised 2d106det-shaped network: (1, 3, 192, 192) -> (1, 212) in [-1, 1]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = _conv(nodes, inits, rng, "input.1", "c1", 3, channels, 3, 4)
    x = _conv(nodes, inits, rng, x, "c2", channels, channels, 3, 4)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    w = rng.normal(0, 0.01, (212, channels)).astype(np.float32)
    inits += [numpy_helper.from_array(w, "fc_w"), numpy_helper.from_array(np.zeros(212, np.float32), "fc_b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], transB=1))
    nodes.append(helper.make_node("Tanh", ["fc"], ["fc1"]))
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [None, 3, 192, 192])]
    outputs = [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [None, 212])]
    return _save(nodes, inits, inputs, outputs, path)


# --------------------------------------------------------------------------------------------- anchor points
