"""The TFLite variants, converted in a second process on the second core while the first works.

Converting a TFLite variant costs 0.3-0.4 s of one core each (three of them for the digits
example), in C++ that holds Python's lock, so threads do not help; and the second core sits
idle while a `make all` trains and exports. So export (or train, when it exports too) starts
this worker before it imports TensorFlow itself: the worker pays its own TensorFlow import
meanwhile, then waits. Once the SavedModel is written, export sends it one job (the SavedModel,
the calibration rows, the variants' names, a folder inside export's temporary folder) and goes
on with TFLite float32, ONNX and the ONNX variants; then it collects the worker's files.

Nothing depends on the worker: where it cannot start, fails or dies, export builds the same
variants itself (``Worker.result`` returns None). It is not started on a machine with one core,
nor where the environment sets ``PIPELINE_TFLITE_WORKER=0`` (one TensorFlow process instead of
two: for a machine short of memory, or one whose cores are already busy, as the test suite's are).
The worker reads its one job from stdin and exits when stdin closes (its parent died).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    def __init__(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        # At a lower priority: where training wants both cores, it gets them (the worker's import
        # and conversions fill what is left).
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.tflite_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                                     preexec_fn=lambda: os.nice(10))
        self.job: dict | None = None

    def submit(self, saved: Path, calibration: np.ndarray | dict[str, np.ndarray], names: list[str],
               folder: Path) -> None:
        """Send the one job: convert ``names`` from ``saved``, write each into ``folder``.

        Args:
            calibration: the input's rows, or for a model of several inputs a dict {input name: rows}
                (handed on as such: the worker builds from it what ``build_tflite`` would here).
        """
        folder.mkdir(parents=True, exist_ok=True)
        self.job = {"saved": str(saved), "names": names, "folder": str(folder)}
        if isinstance(calibration, dict):
            # arr_0, arr_1, ... with the names in the job: any name works (savez's keywords would not
            # take an input named "file").
            np.savez(folder / "calibration.npz", *calibration.values())
            self.job["inputs"] = list(calibration)
        else:
            np.save(folder / "calibration.npy", calibration)
        try:
            self.proc.stdin.write(json.dumps(self.job) + "\n")
            self.proc.stdin.close()
        except OSError:  # it died already: result() says so
            self.job["failed"] = True

    def result(self) -> dict[str, bytes | str] | None:
        """name -> the variant's bytes, or the converter's reason it was not built; None if the
        worker failed (the caller builds them itself)."""
        if self.job is None or self.job.get("failed"):
            return None
        try:
            line = self.proc.stdout.readline()
            self.proc.wait()
            done = json.loads(line) if line else None
        except (OSError, ValueError):
            done = None
        if not isinstance(done, dict) or sorted(done) != sorted(self.job["names"]):
            return None
        folder = Path(self.job["folder"])
        return {n: (folder / n).read_bytes() if done[n] is True else done[n] for n in self.job["names"]}

    def close(self) -> None:
        """Stop the worker if it is still there (a job not sent, or an error in between)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f and not f.closed:
                f.close()


def variants(cfg) -> list[str]:
    """The TFLite variants the config builds: the worker's job."""
    from export.formats import VARIANTS

    return [n for n in VARIANTS if n in cfg["variants"] and n.startswith("tflite-")]


def start(cfg) -> Worker | None:
    """A worker if the config builds any TFLite variant, this machine has a second core, this
    process has not imported TensorFlow yet and PIPELINE_TFLITE_WORKER is not "0"."""
    wanted = bool(variants(cfg)) and os.environ.get("PIPELINE_TFLITE_WORKER") != "0"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not wanted or cores < 2 or "tensorflow" in sys.modules:  # too late: its import would not overlap ours
        return None
    try:
        return Worker()
    except OSError:
        return None


def main() -> None:
    from export import variants as V
    from export.tfenv import tensorflow

    tensorflow()  # while the parent trains or exports
    line = sys.stdin.readline()
    if not line:  # the parent went away, or sent nothing
        os._exit(0)
    job = json.loads(line)
    folder = Path(job["folder"])
    if "inputs" in job:
        with np.load(folder / "calibration.npz") as saved:
            calibration = {name: saved[f"arr_{i}"] for i, name in enumerate(job["inputs"])}
    else:
        calibration = np.load(folder / "calibration.npy")
    done: dict[str, bool | str] = {}
    for name in job["names"]:
        try:
            (folder / name).write_bytes(V.build_tflite(name, Path(job["saved"]), calibration))
            done[name] = True
        except V.VariantNotBuilt as e:
            done[name] = str(e)
    sys.stdout.write(json.dumps(done) + "\n")
    sys.stdout.flush()
    os._exit(0)  # without TensorFlow's teardown (see __main__.exit_now)


if __name__ == "__main__":
    main()
