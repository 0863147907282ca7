"""Playwright on Debian's chromium package: nothing downloads a browser (setup.sh installs
`chromium`; PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 keeps Playwright from fetching its own)."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("NODE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: run scripts/setup.sh (it installs Debian's chromium package)")
    # --no-sandbox: the tests run as root, where chromium's sandbox refuses to start.
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ["--no-sandbox"]}
