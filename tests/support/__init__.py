"""What the tests share: hosts, servers, builds and bundles (no tests in here)."""
