"""Filter the native libraries' start-up chatter out of stderr.

TensorFlow, tf2onnx's converter and LiteRT write INFO/WARNING lines straight to file
descriptor 2 from C++ (oneDNN notices, CPU-feature hints, "Created TensorFlow Lite
XNNPACK delegate"), where no Python logging setting reaches them. ``filtered_stderr``
sends fd 2 to a temporary file while a stage runs, then passes on every line that is not
such chatter: errors and fatal messages always get through.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

_NOISE = re.compile(
    r"^(?:[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\]"  # absl INFO/WARNING lines
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: \S+, output_inference_type: \S+$"  # int8 TFLite
    r")"
)


@contextlib.contextmanager
def filtered_stderr():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            for line in buf.read().decode("utf-8", "replace").splitlines():
                if not _NOISE.match(line):
                    print(line, file=sys.stderr)
