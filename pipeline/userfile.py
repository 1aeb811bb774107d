"""The user's own Python a config names: ``[model] builder`` and ``[verify] oracle``, each
``"file.py:function"``. Imported on demand (the module runs the user's code, which may
import keras); anything that goes wrong is a ConfigError naming the key: one line, exit 2.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError

# What each key's function is called with, for messages.
EXPECTED = {
    "model.builder": "build(input_shape, num_outputs) returning an uncompiled keras.Model",
    "verify.oracle": "oracle(x) returning the true target of each row of x (a numpy array, float64)",
}


def function(cfg: dict[str, Any], key: str) -> Callable | None:
    """The function ``cfg[section][name]`` names (``key`` is "model.builder" or "verify.oracle");
    None when the config names none."""
    section, _, name = key.partition(".")
    spec = cfg[section].get(name)
    if not spec:
        return None
    file, _, fn_name = spec.rpartition(":")
    module_name = "edge_user_" + name + "_" + re.sub(r"\W", "_", Path(file).stem)
    if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == file:
        module = sys.modules[module_name]
    else:
        module = _import(file, module_name, key)
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise ConfigError(file, key, f"no function {fn_name!r} (expected {EXPECTED[key]})")
    if not callable(fn):
        raise ConfigError(file, key, f"{fn_name!r} is a {type(fn).__name__}, expected a function {EXPECTED[key]}")
    return fn


def _import(file: str, module_name: str, key: str):
    folder = str(Path(file).parent)
    try:
        loader = importlib.util.spec_from_file_location(module_name, file)
        if loader is None or loader.loader is None:
            raise ImportError(f"not a Python module: {file}")
        module = importlib.util.module_from_spec(loader)
        sys.path.insert(0, folder)  # so it may import its neighbours
        try:
            sys.modules[module_name] = module
            loader.loader.exec_module(module)
        finally:
            if sys.path and sys.path[0] == folder:
                del sys.path[0]
        return module
    except FileNotFoundError:
        raise ConfigError(file, key, "not found (expected a Python file with the function)") from None
    except SyntaxError as e:
        sys.modules.pop(module_name, None)
        raise ConfigError(file, key, f"line {e.lineno}: syntax error: {e.msg} (expected a Python module)") from None
    except BaseException as e:  # the user's module may raise anything on import, even SystemExit
        sys.modules.pop(module_name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(file, key, f"importing it raised {type(e).__name__}: {first} (expected a module that "
                          "imports)") from None


def call(cfg: dict[str, Any], key: str, *args):
    """Call the user's function; what it raises becomes one ConfigError line naming the key."""
    fn = function(cfg, key)
    try:
        return fn(*args)
    except ConfigError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(None, key, f"{cfg[key.partition('.')[0]][key.partition('.')[2]]} raised "
                          f"{type(e).__name__}: {first}") from None
