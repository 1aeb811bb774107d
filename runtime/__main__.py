"""`python -m runtime ...` or `python path/to/bundle/runtime ...`: the command line (runtime/cli.py).

A shim that must parse on any Python, 2.7 included (see __init__.py): no f-strings, no
annotations, ASCII. Run as a folder, the package's __init__ does not run first, so the
version guard is repeated here.
"""

import os
import sys

if __name__ == "__main__":
    if sys.version_info < (3, 10):
        sys.stderr.write("error: the runner needs Python >= 3.10; %s is Python %s\n" % (
            sys.executable or "this interpreter", sys.version.split()[0]))
        sys.exit(5)  # errors.EXIT_ENVIRONMENT
    if not __package__:
        # Run as a folder (a service or cron job, any cwd): sys.path[0] is runtime/ itself.
        # Import it as the package `runtime` from the folder above instead, which also keeps
        # runtime/'s modules (errors, stream, ...) from passing as top-level modules.
        here = os.path.dirname(os.path.abspath(__file__))
        if sys.path and os.path.abspath(sys.path[0] or ".") == here:
            del sys.path[0]
        sys.path.insert(0, os.path.dirname(here))
    from runtime.cli import main

    sys.exit(main())
