"""The exit-code table in docs/exit-codes.md is the code's: every documented code exists and means what it says."""

from __future__ import annotations

import re

from pipeline import errors as perr
from runtime import errors as rerr
from tests.support.core import ROOT


def table() -> dict[int, tuple[str, str]]:
    text = (ROOT / "docs" / "exit-codes.md").read_text()
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|(.*)\|(.*)\|\s*$", line)
        if m:
            rows[int(m.group(1))] = (m.group(2).strip(), m.group(3).strip())
    return rows


def test_every_pipeline_code_is_documented_as_it_is_used():
    rows = table()
    assert sorted(rows) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert (perr.EXIT_OK, perr.EXIT_VERIFY_FAILED, perr.EXIT_USAGE, perr.EXIT_IO, perr.EXIT_STATE,
            perr.EXIT_ENVIRONMENT) == (0, 1, 2, 3, 4, 5)
    assert perr.VerificationFailed.exit_code == 1 and "verify" in rows[1][0]
    assert perr.ConfigError.exit_code == 2 and "config" in rows[2][0]
    assert perr.StageInputError.exit_code == perr.OutputError.exit_code == 3 and "read or written" in rows[3][0]
    assert perr.StateError.exit_code == 4 and "changed since it was verified" in rows[4][0]
    assert perr.MissingDependency.exit_code == 5 and "lacks a package" in rows[5][0]


def test_every_runtime_code_is_documented_as_it_is_used():
    rows = table()
    assert (rerr.EXIT_OK, rerr.EXIT_CHECK_FAILED, rerr.EXIT_BAD_INPUT, rerr.EXIT_ENVIRONMENT) == (0, 1, 2, 5)
    assert rerr.BundleError.exit_code == 1 and "sha256 mismatch" in rows[1][1]
    assert rerr.InputError.exit_code == 2 and "bad input" in rows[2][1] and "stream" in rows[2][1]
    from runtime.serve import ServeError

    assert ServeError.exit_code == 3 and "cannot listen" in rows[3][1] and "token file" in rows[3][1]
    assert rows[4][1] == "–"
    assert "older than 3.10" in rows[5][1] and "onnxruntime missing" in rows[5][1] and "ssh-keygen" in rows[5][1]
    from runtime import trust

    assert (rerr.EXIT_UNSIGNED, rerr.EXIT_UNTRUSTED_KEY, rerr.EXIT_BAD_SIGNATURE) == (6, 7, 8)
    assert trust.SIGNATURE in rows[6][1] and "unsigned" in rows[6][1] and rows[6][0] == "–"
    assert "does not trust" in rows[7][1] and rows[7][0] == "–"
    assert "changed after signing" in rows[8][1] and rows[8][0] == "–"
    assert "trusted-keys file" in rows[2][1]
