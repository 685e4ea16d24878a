"""The service's own reading of an ONNX file's external-data names, against the onnx package's."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import _get_all_tensors, convert_model_to_external_data, uses_external_data

from app.graphfile import GraphFileError, external_data_files


def _onnx_locations(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    return {
        entry.value
        for tensor in _get_all_tensors(model)
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }


def test_every_exported_graph_names_the_files_onnx_finds(tiny_artifacts: Path) -> None:
    graphs = sorted(tiny_artifacts.glob("*/*.onnx"))
    assert len(graphs) == 14
    for graph in graphs:
        assert external_data_files(graph) == _onnx_locations(graph) == {"weights.bin"}, graph


def test_tensors_inside_subgraphs_and_functions_are_found(tmp_path: Path) -> None:
    """An initializer, a Constant inside an If branch, and a Constant inside a model-local function, each
    stored in its own file: all three names come back."""

    def constant(name: str, value: float) -> onnx.NodeProto:
        array = np.full((64, 64), value, np.float32)  # over the converter's size threshold
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_t"))

    branch = helper.make_graph(
        [constant("b", 2.0)], "then", [], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [64, 64])]
    )
    other = helper.make_graph(
        [constant("c", 3.0)], "else", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [64, 64])]
    )
    function = helper.make_function(
        "local", "Fill", [], ["f"], [constant("f", 4.0)], [helper.make_opsetid("", 17)]
    )
    graph = helper.make_graph(
        [
            helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other),
            helper.make_node("Fill", [], ["z"], domain="local"),
        ],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [64, 64]),
        ],
        initializer=[numpy_helper.from_array(np.ones((64, 64), np.float32), "w")],
    )
    model = helper.make_model(
        graph,
        functions=[function],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )
    convert_model_to_external_data(
        model, all_tensors_to_one_file=False, size_threshold=0, convert_attribute=True
    )
    path = tmp_path / "nested.onnx"
    onnx.save(model, str(path))
    found = external_data_files(path)
    assert found == _onnx_locations(path)
    assert len(found) == 4  # w, and the three constants


def test_a_file_that_is_not_protobuf_is_refused(tmp_path: Path, tiny_artifacts: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((tiny_artifacts / "vae" / "encoder.onnx").read_bytes()[:-7])
    with pytest.raises(GraphFileError, match="ends inside"):
        external_data_files(truncated)
    text = tmp_path / "text.onnx"
    text.write_bytes(b"not an onnx graph")
    with pytest.raises(GraphFileError, match="wire type"):
        external_data_files(text)
