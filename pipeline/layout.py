"""The build layout: where every stage's inputs and outputs live, under BUILD and DIST.

Every file under BUILD and DIST that a stage reads or writes is named here once (what is
inside the bundle is bundle.py's). The Makefile spells the same paths for make's targets
(MODEL_KERAS, HISTORY, LOSS_PNG, EXPORT_OUT, REPORT, VERIFY_OUT, VERIFY_PNG, TARBALL);
tests/pipeline/test_make.py checks that the two agree. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The folders of one run: ``build`` (every stage's outputs) and ``dist`` (the bundle)."""

    build: Path
    dist: Path | None = None  # None: a run that writes nothing to dist (verify then clears no bundle)

    def __post_init__(self) -> None:
        object.__setattr__(self, "build", Path(self.build))
        if self.dist is not None:
            object.__setattr__(self, "dist", Path(self.dist))

    # The run's own files
    @property
    def config_in_force(self) -> Path:
        """The config make compares CONFIG with (copied by `make config` and every stage)."""
        return self.build / "config.toml"

    @property
    def lock(self) -> Path:
        return self.build / ".lock"

    # train
    @property
    def model_keras(self) -> Path:
        return self.build / "model.keras"

    @property
    def history(self) -> Path:
        return self.build / "train" / "history.json"

    @property
    def loss_png(self) -> Path:
        return self.build / "train" / "loss.png"

    # export
    @property
    def model_onnx(self) -> Path:
        return self.build / "model.onnx"

    @property
    def model_tflite(self) -> Path:
        return self.build / "model.tflite"

    def model(self, fmt: str) -> Path:
        """The float32 model of a format ('onnx' or 'tflite')."""
        return {"onnx": self.model_onnx, "tflite": self.model_tflite}[fmt]

    @property
    def reference(self) -> Path:
        """The probes and Keras's outputs on them (pipeline/reference.py)."""
        return self.build / "reference.npz"

    @property
    def variants_dir(self) -> Path:
        return self.build / "variants"

    @property
    def variants_index(self) -> Path:
        return self.variants_dir / "index.json"

    def variant(self, name: str) -> Path:
        """A reduced-precision variant's file: variants/<name>.onnx or .tflite."""
        return self.variants_dir / (name + (".onnx" if name.startswith("onnx-") else ".tflite"))

    def model_file(self, name: str) -> Path:
        """Any model by its report name: onnx-fp32 and tflite-fp32 are model.onnx and model.tflite."""
        fmt, _, precision = name.partition("-")
        return self.model(fmt) if precision == "fp32" else self.variant(name)

    # verify
    @property
    def verify_dir(self) -> Path:
        return self.build / "verify"

    @property
    def report_json(self) -> Path:
        return self.verify_dir / "report.json"

    @property
    def report_md(self) -> Path:
        return self.verify_dir / "report.md"

    @property
    def plots_npz(self) -> Path:
        """The verify plots' data: every model's outputs on the validation rows, sizes and scores."""
        return self.verify_dir / "plots.npz"

    @property
    def validation_png(self) -> Path:
        """The float32 ONNX model on the validation rows: its confusion matrix, or its error per row."""
        return self.verify_dir / "validation.png"

    @property
    def accuracy_size_png(self) -> Path:
        """Every model's accuracy (or MAE) against its file size."""
        return self.verify_dir / "accuracy-vs-size.png"

    # bundle (in dist)
    @property
    def bundle_dir(self) -> Path:
        return self._dist() / "bundle"

    @property
    def tarball(self) -> Path:
        return self._dist() / "bundle.tar.gz"

    def relative(self, path: Path) -> str:
        """``path`` relative to the build folder, as the report records it (so a copied build still matches)."""
        return Path(path).relative_to(self.build).as_posix()

    def _dist(self) -> Path:
        if self.dist is None:
            raise ValueError(f"Layout({self.build}) has no dist folder")
        return self.dist
