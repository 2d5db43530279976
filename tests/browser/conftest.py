"""Headless Chromium for the browser tests (tests/support/browser.py)."""

from ..support.browser import browser, page, shot  # noqa: F401  (fixtures)
