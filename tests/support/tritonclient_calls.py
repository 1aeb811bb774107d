"""Run in tritonclient's venv by tests/runtime/test_tritonclient.py: `python tritonclient_calls.py
HOST:PORT MODEL X.npy OUT.npz`. Calls the server as Triton's examples do, with tritonclient's
defaults (binary input, binary output), and the JSON way; writes each answer to OUT.npz and
prints what the server said about itself as one JSON line."""

import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main() -> None:
    url, model, x_path, out_path = sys.argv[1:5]
    client = httpclient.InferenceServerClient(url=url)
    meta = client.get_model_metadata(model)
    name_in, name_out = meta["inputs"][0]["name"], meta["outputs"][0]["name"]
    x = np.load(x_path)
    inp = httpclient.InferInput(name_in, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # binary_data=True, the default
    answers = {"defaults": client.infer(model, [inp]).as_numpy(name_out),  # no outputs: binary_data_output
               "output_asked_for": client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(name_out)],
                                                request_id="r-7").as_numpy(name_out)}
    as_json = httpclient.InferInput(name_in, list(x.shape), "FP32")
    as_json.set_data_from_numpy(x, binary_data=False)
    answers["json"] = client.infer(model, [as_json], outputs=[
        httpclient.InferRequestedOutput(name_out, binary_data=False)]).as_numpy(name_out)
    np.savez(out_path, **answers)
    print(json.dumps({"live": client.is_server_live(), "ready": client.is_model_ready(model),
                      "extensions": client.get_server_metadata()["extensions"], "inputs": meta["inputs"]}))


if __name__ == "__main__":
    main()
