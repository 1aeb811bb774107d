"""Write the examples' data files from scikit-learn's bundled data sets and a seeded generator (nothing is downloaded).

    python examples/make_data.py           # (re)write every file
    python examples/make_data.py --check   # exit 1 if a committed file differs from what it would write

- ``digits/data.npz``: ``load_digits`` as images: ``x`` float32 (1797, 8, 8, 1), pixel values
  0..16 as they are; ``y`` int64 (1797,), the digit.
- ``wine/data.csv``: ``load_wine``: a header row, the 13 measurements (names made into plain
  identifiers: ``od280/od315_of_diluted_wines`` -> ``od280_od315_of_diluted_wines``) and the
  target column ``cultivar`` holding string labels (``class_0``, ``class_1``, ``class_2``).
- ``diabetes/data.npz``: ``load_diabetes(scaled=False)``: ``x`` float32 (442, 10), the raw
  measurements (age in years, bmi, blood pressure, ...), so that the device takes what a
  clinic would measure; ``y`` float32 (442,), the disease progression a year later.
- ``ranges/data.csv``: made here, not from scikit-learn (a seeded numpy generator, so the same
  bytes every time): 600 positions uniform in a 10 m x 10 m room, the distance from each to six
  fixed beacons plus 5 cm of Gaussian noise (columns ``r0`` .. ``r5``, metres, 3 decimals),
  and the two targets ``east`` and ``north`` (metres, 3 decimals).
- ``sensor_gru/data.npz``: ``waveforms``: 600 synthetic sensor traces from a fixed numpy seed,
  ``x`` float32 (600, 24, 1), 24 readings each (3 decimals); ``y`` int64 (600,): the waveform's
  kind, 0 sine, 1 square, 2 sawtooth (200 each), each with a random period (6 to 16 readings),
  phase, amplitude (0.5 to 2), offset (normal, sd 0.5) and reading noise (normal, sd 0.25).
- ``tank/data.npz``: made here (seeded): 800 views of a tank, one array per model tensor: the
  inputs ``gauge`` float32 (800, 8, 8, 1), an 8x8 image of its level as a bar (pixel noise sd
  0.1, 3 decimals), and ``readings`` float32 (800, 3), inflow and outflow (L/s, uniform 0..2)
  and temperature (degC, normal 20, sd 5); the outputs ``state`` int64 (800,), 0 draining,
  1 steady, 2 filling (inflow minus outflow below -0.3, within, above 0.3 L/s), and ``level``
  float32 (800,), the level in metres (0..2) the image shows.

The files are byte-stable: ``np.savez`` stamps each zip member with the current time, so the
.npz files are written here with ``zipfile`` and a fixed date instead (``np.load`` reads them
as any .npz). scikit-learn is needed only to write them: the pipeline reads the committed files.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz of ``arrays`` (in the order given) whose bytes depend on the arrays alone."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            z.writestr(info, member.getvalue())
    return buf.getvalue()


def identifier(name: str) -> str:
    """'od280/od315_of_diluted_wines' -> 'od280_od315_of_diluted_wines'."""
    return re.sub(r"[^0-9a-zA-Z_]+", "_", name).strip("_").lower()


def digits() -> bytes:
    from sklearn.datasets import load_digits

    b = load_digits()
    x = b.images.astype(np.float32).reshape(-1, 8, 8, 1)
    return npz_bytes({"x": x, "y": b.target.astype(np.int64)})


def wine() -> bytes:
    from sklearn.datasets import load_wine

    b = load_wine()
    columns = [identifier(n) for n in b.feature_names] + ["cultivar"]
    assert len(set(columns)) == len(columns) == 14, columns
    lines = [",".join(columns)]
    for row, target in zip(b.data, b.target):
        # repr of a float is the shortest text that reads back as the same float
        lines.append(",".join([repr(float(v)) for v in row] + [str(b.target_names[target])]))
    return ("\n".join(lines) + "\n").encode("ascii")


def diabetes() -> bytes:
    from sklearn.datasets import load_diabetes

    b = load_diabetes(scaled=False)
    return npz_bytes({"x": b.data.astype(np.float32), "y": b.target.astype(np.float32)})


BEACONS = ((0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0), (5.0, -3.0), (-3.0, 5.0))  # metres


def ranges() -> bytes:
    rng = np.random.default_rng(27)
    position = rng.uniform(0.0, 10.0, size=(600, 2))
    beacons = np.array(BEACONS)
    distance = np.linalg.norm(position[:, None, :] - beacons[None, :, :], axis=2)
    readings = distance + rng.normal(0.0, 0.05, size=distance.shape)
    lines = [",".join([f"r{i}" for i in range(len(BEACONS))] + ["east", "north"])]
    for r, p in zip(readings, position):
        lines.append(",".join(f"{v:.3f}" for v in [*r, *p]))
    return ("\n".join(lines) + "\n").encode("ascii")


WAVEFORMS = ("sine", "square", "sawtooth")  # y's indices; examples/sensor_gru/edge.toml names them


def waveforms(per_kind: int = 200, steps: int = 24, seed: int = 27) -> bytes:
    """Noisy traces of three waveform kinds: which kind a trace is needs its shape over time
    (amplitude, offset and period vary within every kind), a task for a recurrent model."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps, dtype=np.float64)
    xs, ys = [], []
    for k, kind in enumerate(WAVEFORMS):
        period = rng.uniform(6.0, 16.0, per_kind)
        phase = rng.uniform(0.0, 1.0, per_kind)
        amplitude = rng.uniform(0.5, 2.0, per_kind)
        offset = rng.normal(0.0, 0.5, per_kind)
        u = (t[None, :] / period[:, None] + phase[:, None]) % 1.0  # where in its cycle each reading is
        wave = {"sine": np.sin(2 * np.pi * u), "square": np.where(u < 0.5, 1.0, -1.0), "sawtooth": 2 * u - 1}[kind]
        xs.append(offset[:, None] + amplitude[:, None] * wave + rng.normal(0.0, 0.25, (per_kind, steps)))
        ys.append(np.full(per_kind, k, np.int64))
    order = rng.permutation(per_kind * len(WAVEFORMS))
    # Three decimals, as a sensor reports them; and so that a last-digit difference between two
    # machines' sin() cannot change the file.
    x = np.round(np.concatenate(xs)[order], 3).astype(np.float32).reshape(-1, steps, 1)
    return npz_bytes({"x": x, "y": np.concatenate(ys)[order]})


STATES = ("draining", "steady", "filling")  # state's indices; examples/tank/edge.toml names them


def tank(n: int = 800, seed: int = 27) -> bytes:
    """A tank seen two ways: an 8x8 gauge image (its liquid's level as a bar, with pixel noise) and
    three readings (inflow, outflow in L/s; temperature in degC); its state (whether inflow beats
    outflow by 0.3 L/s, either way) and its level in metres (what the image shows, 0..2 m)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.0, 1.0, n)
    rows = np.arange(8, dtype=np.float64)[::-1]  # row 7 is the bottom: filled first
    fill = np.clip(level[:, None] * 8 - rows[None, :], 0.0, 1.0)  # each row's filled share
    gauge = np.repeat(fill[:, :, None], 8, axis=2) + rng.normal(0.0, 0.1, (n, 8, 8))
    inflow, outflow = rng.uniform(0.0, 2.0, n), rng.uniform(0.0, 2.0, n)
    temperature = rng.normal(20.0, 5.0, n)
    net = inflow - outflow
    state = np.where(net < -0.3, 0, np.where(net > 0.3, 2, 1)).astype(np.int64)
    return npz_bytes({
        "gauge": np.round(gauge, 3).astype(np.float32).reshape(n, 8, 8, 1),
        "readings": np.round(np.stack([inflow, outflow, temperature], axis=1), 3).astype(np.float32),
        "state": state,
        "level": np.round(2.0 * level, 3).astype(np.float32),
    })


FILES = {
    "digits/data.npz": digits,
    "wine/data.csv": wine,
    "diabetes/data.npz": diabetes,
    "ranges/data.csv": ranges,
    "sensor_gru/data.npz": waveforms,
    "tank/data.npz": tank,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a committed file differs from what would be written")
    args = p.parse_args(argv)
    stale = []
    for rel, make in FILES.items():
        path, data = HERE / rel, make()
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(rel)
                print(f"examples/{rel}: differs from what make_data.py writes "
                      f"(run: python examples/make_data.py)", file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"examples/{rel}: {len(data)} bytes")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
