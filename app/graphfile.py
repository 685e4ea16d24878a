"""What an ONNX file reads besides itself: the external-data files its tensors name.

A graph exported with its weights outside (`weights.bin`) makes ONNX Runtime open those files by the
names written inside the graph, whatever the manifest says. The loader checks that each of them is a
file the manifest lists with a sha256, so no byte the service runs goes unverified. The service does not
depend on the `onnx` package, so this reads the protobuf wire format directly: only the messages that can
hold a tensor are walked (onnx.proto, field numbers noted per message below).
"""

from collections.abc import Iterator
from pathlib import Path

# message -> {field number: message it holds}; every other field is skipped
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _FUNCTION, _TENSOR, _SPARSE, _ENTRY = range(8)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 25: _FUNCTION},  # graph, functions
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},  # node, initializer, sparse_initializer
    _NODE: {5: _ATTRIBUTE},  # attribute
    # t, g, tensors, graphs, sparse_tensor, sparse_tensors
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},  # node, attribute_proto (default values)
    _SPARSE: {1: _TENSOR, 2: _TENSOR},  # values, indices
    _TENSOR: {13: _ENTRY},  # external_data: key/value pairs, "location" among them
}


class GraphFileError(ValueError):
    """The file is not a well-formed protobuf message."""


def external_data_files(path: Path) -> set[str]:
    """The `location` of every tensor stored outside `path`, as written in the graph (relative to the
    graph's folder)."""
    locations: set[str] = set()
    _walk(memoryview(path.read_bytes()), _MODEL, locations, depth=0)
    return locations


def _walk(buf: memoryview, message: int, locations: set[str], depth: int) -> None:
    if depth > 64:  # subgraphs nest (If, Loop, Scan), but not this deep in any real model
        raise GraphFileError("graphs nested more than 64 deep")
    if message == _ENTRY:
        entry = {field: bytes(value) for field, value in _fields(buf) if isinstance(value, memoryview)}
        if entry.get(1) == b"location" and 2 in entry:
            locations.add(entry[2].decode("utf-8", errors="replace"))
        return
    children = _CHILDREN[message]
    for field, value in _fields(buf):
        if field in children and isinstance(value, memoryview):
            _walk(value, children[field], locations, depth + 1)


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, the bytes of a length-delimited field or None) for each field of one message."""
    i, end = 0, len(buf)
    while i < end:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        value = None
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        else:
            raise GraphFileError(f"unsupported protobuf wire type {wire}")
        if i > end:
            raise GraphFileError("the file ends inside a field")
        yield field, value


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise GraphFileError("the file ends inside a number")
        byte = buf[i]
        result |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return result, i
