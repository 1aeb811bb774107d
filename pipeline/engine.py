"""The verify engine: every model is run once over the probe rows, then compare functions judge
the outputs (in the manner of Polygraphy's ``Comparator.run`` and ``compare_accuracy``).

``run_model`` runs one model (a runner of pipeline/runners.py) over every probe row at batch 1
and over the probes tiled to the large batch in one call, and times it: an ``Outputs``. Keras's
own come from the reference export recorded (``keras_outputs``). ``Judge`` holds what they are
judged against (the reference, the validation labels, the task) and its methods are the compare
functions: ``parity`` (float parity with Keras: ulps, abs/rel error, error at the output's scale
and SNR, top-1 agreement for a classifier), ``accuracy`` (the task's terms on the validation
rows) and ``over_budget`` (a variant's budget). numpy only.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import reference
from .numerics import abs_error, at_scale, compare, tiled

# A regression variant without a max_mae of its own: at most this times Keras's MAE on the
# validation rows (the target's units are the user's; the float model's MAE is their scale).
MAE_SLACK = 1.05
TIE = 1e-6  # Keras's top two outputs closer than this: either label is right (an exact tie)
# The batch-normalization hint (Judge.batch_norm_hint): the training rows' accuracy this far above
# the validation rows' (or the validation MAE this many times the training MAE), with the initial
# statistics still holding at least this share of the layers' moving averages.
BN_GAP, BN_RATIO, BN_LEFT = 0.10, 2.0, 0.05


@dataclass
class Outputs:
    """One model's outputs over the probe rows: at batch 1, and tiled to the large batch."""

    name: str
    batch_1: np.ndarray
    large: np.ndarray
    speed: dict[str, float] | None = None  # p50_batch_1_us, rows_per_s_large_batch (None: Keras)


def batch_1_p50_us(call) -> float:
    """The median latency of ``call()`` (a model run on one row, in its own runtime, Python call
    included), in microseconds."""
    for _ in range(50):  # warm up: first calls pay for allocations and caches
        call()
    times = []
    for _ in range(500):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e6)


# Each model's time against its format's float32 model, in the same runtime and process: blocks of
# calls alternating between the models (the order rotating), the ratio taken block by block, its
# median reported. Short and bounded (about SPEED_BLOCKS * SPEED_BLOCK_S per model and batch): an
# estimate for the report and for bundle.model = "auto", never a pass/fail check.
SPEED_BATCHES = (1, 32)
SPEED_BLOCKS, SPEED_BLOCK_S = 7, 0.004


def relative_speed(calls: dict[str, Any], base: str) -> dict[str, float]:
    """name -> the median over alternating blocks of (its time per call / ``base``'s), for the
    zero-argument callables ``calls`` (``base`` among them): below 1 is faster than ``base``.
    Each block calls one model for SPEED_BLOCK_S (at least once)."""
    names = list(calls)
    for f in calls.values():
        f()  # warm up: first calls pay for allocations and caches
    times: dict[str, list[float]] = {n: [] for n in names}
    for b in range(SPEED_BLOCKS):
        for n in names[b % len(names):] + names[:b % len(names)]:
            f, k, start = calls[n], 0, time.perf_counter()
            while True:
                f()
                k += 1
                spent = time.perf_counter() - start
                if spent >= SPEED_BLOCK_S:
                    break
            times[n].append(spent / k)
    return {n: float(np.median([a / c for a, c in zip(times[n], times[base])])) for n in names}


def speed_vs_float32(runs: dict[str, Any], base: str, x: Any, large: int) -> dict[str, dict[str, float]]:
    """name -> {"batch_1": ratio, "batch_32": ratio}: each model's time against ``base`` (its
    format's float32 model) at each of SPEED_BATCHES (at most ``large`` rows), ``relative_speed``.

    ``runs``: name -> a function of the input rows; ``x``: the probe rows (an array, or a dict of
    arrays by input name), tiled to each batch."""
    out: dict[str, dict[str, float]] = {n: {} for n in runs}
    for batch in sorted({min(b, large) for b in SPEED_BATCHES}):
        xb = {k: tiled(v, batch) for k, v in x.items()} if isinstance(x, dict) else tiled(x, batch)
        ratios = relative_speed({n: (lambda f=f: f(xb)) for n, f in runs.items()}, base)
        for n, r in ratios.items():
            out[n][f"batch_{batch}"] = round(r, 3)
    return out


def run_model(name: str, runner, x: np.ndarray, large: int) -> Outputs:
    """Run ``runner`` once over the probe rows ``x``: one row at a time, then tiled to ``large`` rows."""
    x_large = tiled(x, large)
    t = time.perf_counter()
    y_large = runner.run(x_large)
    large_s = time.perf_counter() - t
    y1 = runner.run_each(x)
    one = x[:1]
    speed = {"p50_batch_1_us": batch_1_p50_us(lambda: runner.run(one)), "rows_per_s_large_batch": large / large_s}
    return Outputs(name, y1, y_large, speed)


def keras_outputs(ref: dict[str, np.ndarray], large: int) -> Outputs:
    return Outputs("keras", ref["keras_y"], tiled(ref["keras_y"], large))


def softmax(y: np.ndarray) -> np.ndarray:
    z = y.astype(np.float64) - y.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def agreement(keras_y: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement with Keras, ties (Keras's top two within TIE) counted as agreeing."""
    k1, g1 = keras_y.argmax(axis=1), got.argmax(axis=1)
    top2 = np.sort(keras_y, axis=1)[:, -2:] if keras_y.shape[1] > 1 else np.zeros((len(keras_y), 2))
    tie = (top2[:, 1] - top2[:, 0]) <= TIE
    same = (k1 == g1) | tie
    bad = np.flatnonzero(~same)
    return {"rows": int(len(same)), "agree": int(same.sum()), "fraction": float(same.mean()),
            "ties": int(tie.sum()), "first_disagreement_row": int(bad[0]) if bad.size else None}


class Judge:
    """What every model is judged against: the reference (Keras's outputs on the probes), the
    validation rows' labels, the working range and the task."""

    def __init__(self, cfg: dict[str, Any], ref: dict[str, np.ndarray]):
        self.cfg, self.ref = cfg, ref
        self.task = cfg["task"]["kind"]
        self.kind = str(ref["output_kind"])
        self.labels = [str(v) for v in ref["labels"]] or None
        self.targets = [str(v) for v in ref["target_names"]]  # a regression's, one per output value
        self.large = cfg["verify"]["large_batch"]
        self.rows = len(ref["x"])
        self.one_feature = int(np.prod(ref["input_shape"])) == 1
        self.val = reference.in_group(ref, "validation")
        self.in_range = reference.in_range(ref)
        self.in_range_large = tiled(self.in_range, self.large)
        self.keras = keras_outputs(ref, self.large)
        self.keras_accuracy = self.accuracy(self.keras)

    def _input(self, row: int) -> float | None:
        """The input of probe row ``row`` when the model has one feature (what a message can name)."""
        return float(self.ref["x"].reshape(self.rows, -1)[row, 0]) if self.one_feature else None

    def parity(self, o: Outputs, tol: dict[str, float] | None) -> dict[str, Any]:
        """``o`` against Keras: per batch (batch 1 and the large batch) every output value within
        ``tol`` (None: a variant, held to its budget instead), and over the working range the
        largest error, the error at the output's scale and the SNR; per probe group; for a
        classifier top-1 agreement and the largest probability difference."""
        atol, rtol = (tol["atol"], tol["rtol"]) if tol else (np.inf, 0.0)
        batches = {}
        for label, got, want in (("batch_1", o.batch_1, self.keras.batch_1),
                                 (f"batch_{self.large}", o.large, self.keras.large)):
            b = asdict(compare(want, got, atol, rtol))
            per_row = max(1, want[0].size)
            b["worst_row"] = int(b.pop("worst_index") // per_row % self.rows)
            if tol is None:
                b.update(atol=None, rtol=None, passed=True, failures=0, min_atol_to_pass=None)
            if self.task == "classification":
                b["top1"] = agreement(want, got)
                p = (softmax if self.kind == "logits" else np.asarray)
                b["max_prob_diff"] = float(np.abs(np.asarray(p(got), np.float64) - np.asarray(p(want), np.float64)).max())
            batches[label] = b
        failing = [k for k, b in batches.items() if not b["passed"]]
        worst = max(failing or batches, key=lambda k: (batches[k]["failures"], batches[k]["max_abs_err"]))
        w = batches[worst]
        out = {k: w[k] for k in ("passed", "probes", "failures", "max_ulp", "max_abs_err", "mean_abs_err",
                                 "max_rel_err", "worst_row", "worst_abs_err", "worst_output", "worst_reference",
                                 "atol", "rtol", "min_atol_to_pass")}
        out.update(passed=not failing, probes=sum(b["probes"] for b in batches.values()),
                   failures=sum(b["failures"] for b in batches.values()),
                   max_ulp=max(b["max_ulp"] for b in batches.values()),
                   max_abs_err=max(b["max_abs_err"] for b in batches.values()),
                   worst_batch=worst, worst_input=self._input(w["worst_row"]), batches=batches)
        # The errors a user meets: probe rows within the working range, both batches.
        ref_in = np.concatenate([self.keras.batch_1[self.in_range], self.keras.large[self.in_range_large]])
        got_in = np.concatenate([o.batch_1[self.in_range], o.large[self.in_range_large]])
        err = abs_error(ref_in, got_in).reshape(len(ref_in), -1).max(axis=1) if len(ref_in) else np.zeros(1)
        worst_in = int(np.argmax(err))
        rows_in = np.concatenate([np.flatnonzero(self.in_range), tiled(np.arange(self.rows), self.large)[
            self.in_range_large]]) if len(ref_in) else np.zeros(1, int)
        out["range"] = {"rows": int(self.in_range.sum()), "max_abs_err": float(err[worst_in]),
                        "worst_row": int(rows_in[worst_in]), "worst_input": self._input(int(rows_in[worst_in])),
                        **at_scale(ref_in, got_in, per_column=self.task == "regression")}
        out["groups"] = {}
        for i, g in enumerate(self.ref["group_names"]):
            sel = self.ref["group"] == i
            gp = compare(self.keras.batch_1[sel], o.batch_1[sel], np.inf, 0.0)
            out["groups"][str(g)] = {"rows": int(sel.sum()), "max_ulp": gp.max_ulp, "max_abs_err": gp.max_abs_err}
        if self.task == "classification":
            out["top1_agreement"] = min(b["top1"]["fraction"] for b in batches.values())
            out["max_prob_diff"] = max(b["max_prob_diff"] for b in batches.values())
        return out

    def accuracy(self, o: Outputs) -> dict[str, Any]:
        """The validation rows' accuracy in the task's terms (batch 1). A regression's MAE and
        largest error are over every target's values, and per target in ``targets`` (each in its
        own units: the checks hold each target to its own figures)."""
        y, y_true = o.batch_1[self.val], self.ref["y_val"]
        if self.task == "regression":
            n = len(y)
            err = np.abs(y.reshape(n, -1).astype(np.float64) - y_true.astype(np.float64).reshape(n, -1))

            def figures(e: np.ndarray) -> dict[str, Any]:
                worst = int(np.argmax(e)) // (e.size // n) if e.size else 0
                return {"mae": float(e.mean()) if e.size else float("nan"),
                        "max_err": float(e.max()) if e.size else float("nan"), "worst_row": worst}

            out = {"rows": n, "oracle_rows": int(self.ref["oracle_rows"]), **figures(err)}
            out["worst_input"] = self._input(int(np.flatnonzero(self.val)[out["worst_row"]]) if n else 0)
            out["targets"] = {name: figures(err[:, j]) for j, name in enumerate(self.targets)}
            return out
        pred = y.argmax(axis=1)
        k = len(self.labels)
        cm = np.zeros((k, k), np.int64)
        np.add.at(cm, (y_true.astype(np.int64), pred), 1)
        support = cm.sum(axis=1)
        recall = {self.labels[i]: (float(cm[i, i] / support[i]) if support[i] else None) for i in range(k)}
        return {"rows": int(len(pred)), "accuracy": float((pred == y_true).mean()), "recall": recall,
                "confusion": cm.tolist(), "labels": list(self.labels)}

    def of_target(self, target: str) -> str:
        """" of 'east'" when the regression has several targets, else ''."""
        return f" of {target!r}" if len(self.targets) > 1 else ""

    def accuracy_failure(self, name: str, acc: dict[str, Any]) -> str | None:
        """The line naming a model whose accuracy is below the config's floor (None: it is not);
        a regression's floor (verify.max_mae) holds for each target."""
        v = self.cfg["verify"]
        if "mae" in acc and v["max_mae"] is not None:
            over = [(t, a) for t, a in acc["targets"].items() if not a["mae"] <= v["max_mae"]]
            if over:
                target, a = over[0]
                at = f" (input {acc['worst_input']:.6g})" if len(self.targets) == 1 and acc.get(
                    "worst_input") is not None else ""
                return (f"{name} accuracy: MAE{self.of_target(target)} {a['mae']:.4g} on {acc['rows']} validation "
                        f"rows (allowed {v['max_mae']:g}); worst {a['max_err']:.4g} at validation row "
                        f"{a['worst_row']}{at}")
        if "accuracy" in acc and v["min_accuracy"] is not None and acc["accuracy"] < v["min_accuracy"]:
            return (f"{name} accuracy: {acc['accuracy']:.2%} on {acc['rows']} validation rows "
                    f"(required {v['min_accuracy']:.2%})")
        return None

    def baseline(self) -> dict[str, Any]:
        """The trivial baseline on the validation rows, from the training rows' labels alone: the
        majority class for a classifier; for a regression, predicting the training mean and the
        training median, the one with the lower MAE being the baseline. ``error`` is what a model
        is compared on: 1 - accuracy, or the MAE."""
        y_true = self.ref["y_val"]
        if self.task == "classification":
            counts = self.ref["train_counts"]
            majority = int(np.argmax(counts))  # ties: the first class
            acc = float(np.mean(y_true == majority)) if len(y_true) else float("nan")
            return {"kind": "majority class", "label": self.labels[majority], "train_share": float(
                counts[majority] / counts.sum()), "accuracy": acc, "error": 1.0 - acc}
        y = y_true.astype(np.float64).reshape(len(y_true), -1)
        per = {}
        for j, target in enumerate(self.targets):
            maes = {how: float(np.mean(np.abs(y[:, j] - self.ref[f"train_{how}"][j]))) if len(y) else float("nan")
                    for how in ("mean", "median")}
            values = {how: float(self.ref[f"train_{how}"][j]) for how in maes}
            best = min(maes, key=lambda how: maes[how])
            per[target] = {"kind": f"training {best}", **{how: {"value": values[how], "mae": maes[how]}
                                                          for how in maes},
                           "value": values[best], "mae": maes[best], "error": maes[best]}
        if len(per) == 1:
            return next(iter(per.values()))
        mae = float(np.mean([b["mae"] for b in per.values()]))
        return {"kind": "training mean or median, per target", "mae": mae, "error": mae, "targets": per}

    def baseline_failure(self, name: str, acc: dict[str, Any], base: dict[str, Any]) -> str | None:
        """The line naming a model that does not beat the trivial baseline by verify.baseline_margin
        (it must remove at least that fraction of the baseline's error); None when it does."""
        margin = self.cfg["verify"]["baseline_margin"]
        if self.task == "classification":
            needed = (1.0 - margin) * base["error"]
            if 1.0 - acc["accuracy"] <= needed + 1e-12:
                return None
            return (f"{name} accuracy {acc['accuracy']:.1%} does not beat the majority-class baseline "
                    f"{base['accuracy']:.1%} (always '{base['label']}', {base['train_share']:.1%} of the training "
                    f"rows) on {acc['rows']} validation rows; verify.baseline_margin {margin:g} needs at least "
                    f"{1.0 - needed:.1%}")
        failing = []  # a regression of several targets beats the baseline on each of them
        for target, b in (base.get("targets") or {self.targets[0]: base}).items():
            needed, mae = (1.0 - margin) * b["error"], acc["targets"][target]["mae"]
            if mae <= needed + 1e-12:
                continue
            other = "mean" if b["kind"] == "training median" else "median"
            failing.append(f"{name} MAE{self.of_target(target)} {mae:.4g} does not beat the baseline of always "
                           f"predicting the {b['kind']} ({b['value']:.4g}), MAE {b['mae']:.4g} ({other}: "
                           f"{b[other]['mae']:.4g}) on {acc['rows']} validation rows; verify.baseline_margin "
                           f"{margin:g} needs at most {needed:.4g}")
        return "; ".join(failing) or None

    def batch_norm_hint(self, training: dict[str, Any], acc: dict[str, Any]) -> str | None:
        """Why a model may have learned nothing that shows at inference: the training rows scored far
        better in training (batch statistics) than the validation rows do (moving statistics), and
        its BatchNormalization layers' moving statistics saw too few updates to forget their initial
        values. None when that is not the case (or train did not record it: a model that came trained)."""
        bn, steps, train = training.get("batch_norm"), training.get("steps"), training.get("final_train_score")
        if not bn or not steps or train is None:
            return None
        momentum = max(layer["momentum"] for layer in bn)
        left = momentum ** steps  # the initial statistics' (mean 0, variance 1) weight in the moving averages
        if self.task == "classification":
            far, figures = train - acc["accuracy"] >= BN_GAP, f"training accuracy {train:.1%}, validation {acc['accuracy']:.1%}"
        else:
            far, figures = acc["mae"] >= BN_RATIO * train, f"training MAE {train:.4g}, validation {acc['mae']:.4g}"
        if left < BN_LEFT or not far:
            return None
        need = math.ceil(math.log(0.01) / math.log(momentum)) if 0 < momentum < 1 else None
        more = f"about {need:,} steps bring that under 1 %" if need else "more steps"
        return (f"hint: {figures}; the {len(bn)} BatchNormalization layer(s) (momentum {momentum:g}) had {steps:,} "
                f"updates, so their moving statistics still hold {left:.0%} of their initial values: train longer "
                f"(train.epochs; {more}) or give those layers a lower momentum (0.9 needs "
                f"{math.ceil(math.log(0.01) / math.log(0.9))} steps)")

    def parity_failures(self, name: str, p: dict[str, Any]) -> list[str]:
        """A float32 format's failure lines: values beyond its tolerance, top-1 disagreements."""
        out = []
        if not p["passed"]:
            at = f" (input {p['worst_input']:.6g})" if p.get("worst_input") is not None else ""
            out.append(f"{name} parity: {p['failures']:,} of {p['probes']:,} values beyond atol {p['atol']:g} + rtol "
                       f"{p['rtol']:g} * |Keras|; worst at row {p['worst_row']}{at}, "
                       f"{p['worst_batch'].replace('_', ' ')}: {p['worst_output']:.6g} vs Keras "
                       f"{p['worst_reference']:.6g} (off by {p['worst_abs_err']:.3g}; {p['max_ulp']:,} ulp)")
        if self.task == "classification" and p["top1_agreement"] < 1.0:
            b = min(p["batches"].values(), key=lambda b: b["top1"]["fraction"])
            out.append(f"{name} top-1 agreement with Keras: {b['top1']['agree']} of {b['top1']['rows']} rows "
                       f"(expected all, exact ties aside; first disagreement at probe row "
                       f"{b['top1']['first_disagreement_row']})")
        return out

    def over_budget(self, m: dict[str, Any], budget: dict[str, Any]) -> list[str]:
        """One short reason per figure of a variant beyond its budget."""
        reasons = []
        acc, p = m["accuracy"], m["parity"]
        if self.task == "classification":
            drop = self.keras_accuracy["accuracy"] - acc["accuracy"]
            m["accuracy_drop"] = drop
            if drop > budget["max_accuracy_drop"] + 1e-12:
                reasons.append(f"accuracy {acc['accuracy']:.2%} is {drop * 100:.2f} points below Keras's "
                               f"{self.keras_accuracy['accuracy']:.2%} (allowed {budget['max_accuracy_drop'] * 100:g})")
            if p["top1_agreement"] < budget["min_agreement"]:
                reasons.append(f"top-1 agreement with Keras {p['top1_agreement']:.2%} < {budget['min_agreement']:.2%}")
            return reasons
        r = p["range"]
        if budget.get("parity") is not None and not r["max_abs_err"] <= budget["parity"]:
            at = f"input {r['worst_input']:.6g}" if r.get("worst_input") is not None else f"probe row {r['worst_row']}"
            reasons.append(f"parity {r['max_abs_err']:.4g} > {budget['parity']:g} (at {at})")
        for target, a in acc["targets"].items():  # each target in its own units
            of = self.of_target(target)
            keras_mae = self.keras_accuracy["targets"][target]["mae"]
            allowed = budget["max_mae"] if budget.get("max_mae") is not None else MAE_SLACK * keras_mae
            if not a["mae"] <= allowed:
                reasons.append(f"MAE{of} {a['mae']:.4g} > {allowed:.4g}" + (
                    "" if budget.get("max_mae") is not None else f" ({MAE_SLACK:g}x Keras's)"))
            if budget.get("max_err") is not None and not a["max_err"] <= budget["max_err"]:
                at = f" (at input {acc['worst_input']:.6g})" if not of and acc.get("worst_input") is not None else ""
                reasons.append(f"max error{of} {a['max_err']:.4g} > {budget['max_err']:g}{at}")
        return reasons
