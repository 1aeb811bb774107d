"""Device checks: the bundle where a device would run it, before any device runs it.

- ``runtime_check``: the runtime tests in venvs made from the bundle's requirements alone,
  per Python found here (``make runtime-check``).
- ``picheck``: the bundle under emulated arm64 (QEMU Cortex-A72 = Pi 4, A76 = Pi 5), its
  answers compared with x86's (``make pi-check``); ``pi_smoke`` is what runs there.
- ``emulated_pi``: an arm64 Python that an SSH test host (or Ansible) can use as a device's.

runtime_check and picheck install the bundle's requirements one way, the device's:
``deploy.wheelhouse.install`` (the target's wheelhouse, offline, pinned by sha256).
"""
