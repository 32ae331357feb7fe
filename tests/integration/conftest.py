"""pytest set-up for the integration tests: which medusad to test.

    /usr/bin/python3 -m pytest tests/integration                       # every case
    /usr/bin/python3 -m pytest tests/integration/test_echo.py -v       # one file
    /usr/bin/python3 -m pytest tests/integration/test_echo.py::test_echoes_bytes_back
    /usr/bin/python3 -m pytest tests/integration -k reload --medusad build-asan/medusad

The binary is --medusad, else $MEDUSAD, else build/medusad; medusactl is
taken from the same folder. Shared helpers live in harness.py.
"""
import os

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def pytest_addoption(parser):
    parser.addoption("--medusad", default=None,
                     help="the medusad binary to test (default $MEDUSAD or build/medusad)")


def pytest_configure(config):
    # Before any test module (and so harness) is imported.
    path = config.getoption("--medusad") or os.environ.get("MEDUSAD") or \
        os.path.join(REPO, "build", "medusad")
    os.environ["MEDUSAD"] = os.path.abspath(path)
