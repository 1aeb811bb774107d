"""The Open Inference Protocol v2 (KServe's and Triton's HTTP/REST API) on the wire. numpy + stdlib.

Routes (``route``): ``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET
/v2/health/ready``, ``GET /v2/models/<name>[/versions/<v>]`` (model metadata),
``GET .../ready`` and ``POST .../infer``. ``<name>`` is the manifest's ``model.name``
("celsius-to-fahrenheit" for a bundle without one); the version is the first 12 hex digits
of the model's sha256, so it changes when a reload swaps in another model. One input and
one output tensor (a model of several: one tensor per input by name, one per output asked
for; ``decode_infer_multi``), datatype FP32, as JSON data (flat row-major, or nested) or as binary data
(the binary tensor data extension, which Triton's clients use by default): a request whose
``Inference-Header-Content-Length`` header says how long its JSON is, the input's bytes after
it (``"parameters": {"binary_data_size": N}``, little-endian, row-major); the output comes
back the same way when the request asks (``"binary_data": true`` on the output, or
``"binary_data_output": true`` on the request). A refused request raises ``codec.BadRequest``
with the 400 document.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .codec import BadRequest, count_values, number_texts, parse_json

SERVER = {"name": "edge-model", "version": "1", "extensions": ["binary_tensor_data"]}
HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary tensor data extension's HTTP header
BINARY = np.dtype("<f4")  # FP32 as binary data: little-endian, row-major, no padding
PLATFORM = "onnxruntime_onnx"
DATATYPE = "FP32"
# The route labels (as /metrics counts them) and their methods.
ROUTES = {"/v2": "GET", "/v2/health/live": "GET", "/v2/health/ready": "GET", "/v2/models/{model}": "GET",
          "/v2/models/{model}/ready": "GET", "/v2/models/{model}/infer": "POST"}
OPEN = ("/v2/health/live", "/v2/health/ready")  # like /healthz: no token needed (orchestrators' probes)


def route(path: str) -> tuple[str, str | None, str | None] | None:
    """(route label, model name, version) of a /v2 path, or None when it is none of them."""
    parts = path.split("/")[1:]
    if parts == ["v2"]:
        return "/v2", None, None
    if len(parts) == 3 and parts[:2] == ["v2", "health"] and parts[2] in ("live", "ready"):
        return path, None, None
    if len(parts) < 3 or parts[:2] != ["v2", "models"] or not parts[2]:
        return None
    name, rest, version = parts[2], parts[3:], None
    if rest[:1] == ["versions"]:
        if len(rest) < 2 or not rest[1]:
            return None
        version, rest = rest[1], rest[2:]
    if rest == []:
        return "/v2/models/{model}", name, version
    if rest in (["ready"], ["infer"]):
        return f"/v2/models/{{model}}/{rest[0]}", name, version
    return None


def version_of(sha256: str) -> str:
    return sha256[:12]


def model_metadata(sig, sha256: str) -> dict[str, Any]:
    """GET /v2/models/<name> for the model of signature ``sig``."""
    if sig.multi:
        return {
            "name": sig.model_name, "versions": [version_of(sha256)], "platform": PLATFORM,
            "inputs": [{"name": t.name, "datatype": DATATYPE, "shape": [-1, *t.shape]} for t in sig.inputs],
            "outputs": [{"name": t.name, "datatype": DATATYPE, "shape": [-1, *t.shape]} for t in sig.outputs],
            "parameters": {"outputs": {t.name: {"task": t.task, "labels": t.labels, "output_kind": t.output_kind}
                                       for t in sig.outputs}, "sha256": sha256},
        }
    return {
        "name": sig.model_name,
        "versions": [version_of(sha256)],
        "platform": PLATFORM,
        "inputs": [{"name": sig.input_name, "datatype": DATATYPE, "shape": [-1, *sig.shape]}],
        "outputs": [{"name": sig.output_name, "datatype": DATATYPE, "shape": [-1, *sig.output_shape]}],
        "parameters": {"task": sig.task, "labels": sig.labels, "output_kind": sig.output_kind, "sha256": sha256},
    }


def _refuse(message: str) -> BadRequest:
    return BadRequest({"error": message})


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(the JSON, the binary data after it) of a body whose ``Inference-Header-Content-Length``
    header (None: absent, the whole body is JSON) says how long its JSON part is."""
    if header_length is None:
        return body, b""
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise _refuse(f"{HEADER_LENGTH}: expected the JSON part's size in bytes (0 to the body's "
                      f"{len(body)}), got {header_length[:40]!r}")
    n = int(header_length)
    return body[:n], body[n:]


def _params(obj: dict, where: str) -> dict:
    """The ``parameters`` object of a request, an input or an output ({} when not given)."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _refuse(f"{where}.parameters: expected an object, got {type(params).__name__}")
    return params


def _flag(params: dict, key: str, where: str) -> bool:
    """A boolean parameter of the binary tensor data extension (false when not given)."""
    v = params.get(key, False)
    if not isinstance(v, bool):
        raise _refuse(f"{where}.parameters.{key}: expected true or false, got {v!r}"[:200])
    return v


def _binary_input(t: dict, binary: bytes, shape: list[int], total: int) -> np.ndarray | None:
    """inputs[0]'s values from the binary data after the JSON, when it says it has them there."""
    size = _params(t, "inputs[0]").get("binary_data_size")
    if size is None:
        if binary:
            raise _refuse(f"body: {len(binary)} bytes after the JSON part, but no input has a binary_data_size")
        return None
    if type(size) is not int or size < 0:
        raise _refuse(f"inputs[0].parameters.binary_data_size: expected a size in bytes, got {size!r}"[:200])
    if "data" in t:
        raise _refuse("inputs[0]: both data and binary_data_size; send the values one way")
    want = total * BINARY.itemsize
    if size != want:
        raise _refuse(f"inputs[0].parameters.binary_data_size: {size} bytes, expected {want} ({total} {DATATYPE} "
                      f"values for shape {shape})")
    if len(binary) != size:
        raise _refuse(f"body: {len(binary)} bytes after the JSON part, expected the input's binary_data_size "
                      f"{size}" + ("" if binary else f" (and the {HEADER_LENGTH} header)"))
    return np.frombuffer(binary, BINARY).reshape(shape)


def decode_infer(body: bytes, sig, max_values: int, header_length: str | None = None
                 ) -> tuple[np.ndarray, Any, int, bool]:
    """(the input tensor as an array shaped as the request says, the request's ``id`` (None
    when it has none), how many values it holds, whether the output goes back as binary data)
    from an infer request body, for the model of signature ``sig``; ``header_length`` is the
    request's Inference-Header-Content-Length header (None: no binary data)."""
    body, binary = split_body(body, header_length)
    doc = parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise _refuse('body: expected an inference request {"inputs": [{"name", "shape", "datatype", "data"}]}')
    inputs = doc["inputs"]
    if len(inputs) != 1:
        raise _refuse(f"inputs: expected one input tensor ({sig.input_name!r}), got {len(inputs)}")
    t = inputs[0]
    if not isinstance(t, dict):
        raise _refuse("inputs[0]: expected a tensor {\"name\", \"shape\", \"datatype\", \"data\"}")
    if t.get("name") != sig.input_name:
        raise _refuse(f"inputs[0].name: expected {sig.input_name!r}, got {t.get('name')!r}")
    if t.get("datatype") != DATATYPE:
        raise _refuse(f"inputs[0].datatype: expected {DATATYPE!r}, got {t.get('datatype')!r}")
    shape = t.get("shape")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise _refuse(f"inputs[0].shape: expected a list of sizes (integers >= 0), got {shape!r}"[:200])
    if len(shape) != len(sig.shape) + 1 or tuple(shape[1:]) != sig.shape:
        want = ", ".join(["n", *map(str, sig.shape)])
        raise _refuse(f"inputs[0].shape {shape} expected [{want}]")
    total = math.prod(shape)
    if total > max_values:
        raise _refuse(f"inputs[0]: {total} values, at most {max_values} per request (--max-values)")
    if total == 0:
        raise _refuse("inputs[0]: empty, expected at least one example")
    arr = _binary_input(t, binary, shape, total)
    if arr is None:
        arr = _json_input(t.get("data"), shape, total, max_values)
    binary_out = _flag(_params(doc, "request"), "binary_data_output", "request")
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list):
        raise _refuse(f"outputs: expected a list of requested outputs, got {type(outputs).__name__}")
    for i, o in enumerate(outputs):
        if not isinstance(o, dict) or o.get("name") != sig.output_name:
            got = o.get("name") if isinstance(o, dict) else o
            raise _refuse(f"outputs[{i}].name: expected {sig.output_name!r}, got {got!r}")
        params = _params(o, f"outputs[{i}]")
        if "binary_data" in params:
            binary_out = _flag(params, "binary_data", f"outputs[{i}]")  # the output's own say wins
    return arr, doc.get("id"), total, binary_out


def _json_input(data: Any, shape: list[int], total: int, max_values: int, where: str = "inputs[0]") -> np.ndarray:
    """The values of the input tensor ``where`` from its JSON data."""
    if not isinstance(data, list):
        raise _refuse(f"{where}.data: expected a list of numbers (flat, row-major, or nested)")
    if count_values(data) > max_values:
        raise _refuse(f"{where}.data: more than {max_values} values per request (--max-values)")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, RecursionError):
        raise _refuse(f"{where}.data: expected numbers, flat or nested (not ragged)") from None
    if arr.dtype.kind not in "iuf":
        raise _refuse(f"{where}.data: expected numbers, got dtype {arr.dtype}")
    if arr.size != total:
        raise _refuse(f"{where}.data: expected {total} values for shape {shape}, got {arr.size}")
    return arr.reshape(shape)


def _names(names: list[str]) -> str:
    return ", ".join(map(repr, names))


def decode_infer_multi(body: bytes, sig, max_values: int, header_length: str | None = None
                       ) -> tuple[dict[str, np.ndarray], Any, int, list[tuple[str, bool]]]:
    """``decode_infer`` for a model of several inputs or outputs (``sig``, a MultiSignature):
    (the input tensors by name, each shaped as the request says; the request's ``id``; how many
    values they hold; the outputs to answer, in order, each with whether it goes back as binary
    data). The request gives one tensor per model input, by name, in any order; binary data
    after the JSON holds the binary inputs' values one after the other, in the request's order.
    ``outputs`` names some of the model's outputs (none: every one, in the signature's order)."""
    body, binary = split_body(body, header_length)
    doc = parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise _refuse('body: expected an inference request {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    names = sig.input_names
    arrays: dict[str, np.ndarray] = {}
    offset = count = 0
    for i, t in enumerate(doc["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(t, dict):
            raise _refuse(f"{where}: expected a tensor {{\"name\", \"shape\", \"datatype\", \"data\"}}")
        name = t.get("name")
        if name not in names:
            raise _refuse(f"{where}.name: expected one of the model's inputs ({_names(names)}), got {name!r}"[:300])
        if name in arrays:
            raise _refuse(f"{where}.name: {name!r} is given twice; expected one tensor per input")
        if t.get("datatype") != DATATYPE:
            raise _refuse(f"{where}.datatype: expected {DATATYPE!r}, got {t.get('datatype')!r}")
        spec = sig.input(name)
        shape = t.get("shape")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise _refuse(f"{where}.shape: expected a list of sizes (integers >= 0), got {shape!r}"[:200])
        if len(shape) != len(spec.shape) + 1 or tuple(shape[1:]) != spec.shape:
            raise _refuse(f"{where}.shape {shape} expected [{', '.join(['n', *map(str, spec.shape)])}] for {name!r}")
        total = math.prod(shape)
        count += total
        if count > max_values:
            raise _refuse(f"inputs: more than {max_values} values per request (--max-values)")
        if total == 0:
            raise _refuse(f"{where}: empty, expected at least one example")
        size = _params(t, where).get("binary_data_size")
        if size is None:
            arrays[name] = _json_input(t.get("data"), shape, total, max_values, where)
            continue
        want = total * BINARY.itemsize
        if type(size) is not int or size < 0:
            raise _refuse(f"{where}.parameters.binary_data_size: expected a size in bytes, got {size!r}"[:200])
        if "data" in t:
            raise _refuse(f"{where}: both data and binary_data_size; send the values one way")
        if size != want:
            raise _refuse(f"{where}.parameters.binary_data_size: {size} bytes, expected {want} ({total} {DATATYPE} "
                          f"values for shape {shape})")
        if len(binary) < offset + size:
            raise _refuse(f"body: {len(binary)} bytes after the JSON part, fewer than the binary_data_size of "
                          f"{where} and those before it ({offset + size})"
                          + ("" if binary else f" (and the {HEADER_LENGTH} header)"))
        arrays[name] = np.frombuffer(binary, BINARY, total, offset).reshape(shape)
        offset += size
    missing = [n for n in names if n not in arrays]
    if missing:
        raise _refuse(f"inputs: no tensor {missing[0]!r}; expected one per model input: {_names(names)}")
    if offset != len(binary):
        raise _refuse(f"body: {len(binary)} bytes after the JSON part, expected the inputs' binary_data_size "
                      f"{offset} in all")
    binary_out = _flag(_params(doc, "request"), "binary_data_output", "request")
    requested = doc.get("outputs") or []
    if not isinstance(requested, list):
        raise _refuse(f"outputs: expected a list of requested outputs, got {type(requested).__name__}")
    outputs: list[tuple[str, bool]] = []
    known = sig.output_tensor_names
    for i, o in enumerate(requested):
        name = o.get("name") if isinstance(o, dict) else o
        if not isinstance(o, dict) or name not in known:
            raise _refuse(f"outputs[{i}].name: expected one of the model's outputs ({_names(known)}), got {name!r}"[:300])
        if any(name == n for n, _ in outputs):
            raise _refuse(f"outputs[{i}].name: {name!r} is asked for twice")
        params = _params(o, f"outputs[{i}]")
        outputs.append((name, _flag(params, "binary_data", f"outputs[{i}]") if "binary_data" in params else binary_out))
    return arrays, doc.get("id"), count, outputs or [(n, binary_out) for n in known]


def encode_infer_multi(sig, sha256: str, y: dict[str, np.ndarray], outputs: list[tuple[str, bool]],
                       request_id: Any) -> tuple[bytes, int | None]:
    """The infer answer of a model of several outputs: one tensor per output of ``outputs``
    ((name, as binary data), in order) from the batches ``y`` by name; the binary ones' values
    follow the JSON in that order. The length of the JSON part when any is binary, else None."""
    head = {"model_name": sig.model_name, "model_version": version_of(sha256)}
    if request_id is not None:
        head["id"] = request_id
    tensors, data = [], []
    for name, binary in outputs:
        v = y[name]
        shape = json.dumps([int(d) for d in v.shape], separators=(",", ":"))
        out = f'{{"name":{json.dumps(name)},"datatype":"{DATATYPE}","shape":{shape},'
        if binary:
            data.append(np.ascontiguousarray(v, BINARY).tobytes())
            out += f'"parameters":{{"binary_data_size":{len(data[-1])}}}}}'
        else:
            out += f'"data":[{",".join(number_texts(v))}]}}'
        tensors.append(out)
    doc = (json.dumps(head)[:-1] + f',"outputs":[{",".join(tensors)}]}}').encode()
    return (doc + b"".join(data), len(doc)) if any(b for _, b in outputs) else (doc, None)


def encode_infer(sig, sha256: str, y: np.ndarray, request_id: Any, binary: bool = False) -> tuple[bytes, int | None]:
    """The infer answer for the model's output batch ``y`` (n, *output shape), and the length of
    its JSON part when binary data follows it (the Inference-Header-Content-Length header; None:
    all JSON, the values as flat row-major data)."""
    head = {"model_name": sig.model_name, "model_version": version_of(sha256)}
    if request_id is not None:
        head["id"] = request_id
    shape = json.dumps([int(d) for d in y.shape], separators=(",", ":"))
    out = f'{{"name":{json.dumps(sig.output_name)},"datatype":"{DATATYPE}","shape":{shape},'
    data = np.ascontiguousarray(y, BINARY).tobytes() if binary else b""
    out += (f'"parameters":{{"binary_data_size":{len(data)}}}}}' if binary
            else f'"data":[{",".join(number_texts(y))}]}}')
    doc = (json.dumps(head)[:-1] + f',"outputs":[{out}]}}').encode()
    return (doc + data, len(doc)) if binary else (doc, None)
