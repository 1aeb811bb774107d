"""Issue 27, section 3: Triton's own client, `tritonclient` with its defaults (the binary tensor
data extension both ways), against `python -m runtime serve`, answering what Runner.predict
answers, bit for bit; and the JSON way too. The client runs in a venv of its own
(tests/support/clients.py: its pins clash with TensorFlow's), the server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from runtime import Runner
from tests.support.clients import client_python, TRITONCLIENT
from tests.support.core import FAILSAFE

pytestmark = pytest.mark.slow  # a venv to make (once), and a server

CALLS = Path(__file__).resolve().parent.parent / "support" / "tritonclient_calls.py"


@pytest.mark.parametrize("which", ["image", "tutorial"])
def test_tritonclient_with_its_defaults_gets_the_runners_answers(which, serve_bundle, image_bundle, bundle, tmp_path):
    b = image_bundle if which == "image" else bundle
    x = ((np.random.default_rng(8).random((6, 8, 8, 1)) * 16) if which == "image"
         else np.linspace(-40, 100, 6).reshape(6, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with Runner.from_bundle(b) as r:
        want, name = r.predict(x), r.name
    server = serve_bundle(b)
    r = subprocess.run([str(client_python(TRITONCLIENT)), str(CALLS), server.url.removeprefix("http://"), name,
                        str(tmp_path / "x.npy"), str(tmp_path / "out.npz")], capture_output=True, text=True,
                       timeout=FAILSAFE)
    assert r.returncode == 0, r.stderr[-3000:]
    said = json.loads(r.stdout.strip().splitlines()[-1])
    assert said["live"] is True and said["ready"] is True and said["extensions"] == ["binary_tensor_data"]
    with np.load(tmp_path / "out.npz") as got:
        assert sorted(got.files) == ["defaults", "json", "output_asked_for"]
        for how in got.files:
            assert got[how].dtype == np.float32 and got[how].tobytes() == want.tobytes(), (how, got[how], want)
