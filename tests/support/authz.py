"""The authorization matrix: each test asserts one cell (actor × action → allowed or denied) and
records it; the module's table is printed in the test output when its tests are done.

    @pytest.fixture(scope="module")
    def authz(request):
        yield from authorization_matrix(request)

    def test_x(authz):
        authz.check("alice's server token", "GET s3-credentials/bob", response, allowed=False)
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALLOWED = range(200, 300)


@dataclass(frozen=True)
class Cell:
    actor: str
    action: str
    expected: str  # "allowed" or "denied"
    status: int
    message: str


@dataclass
class Matrix:
    title: str
    cells: list[Cell] = field(default_factory=list)

    def check(self, actor: str, action: str, response, *, allowed: bool, status: int | None = None) -> None:
        """Assert the response allows (2xx) or denies (`status`, default 403) `actor` doing `action`; record it."""
        want = "allowed" if allowed else "denied"
        code = response.status_code
        try:
            message = response.json().get("message", "") if code not in ALLOWED else ""
        except ValueError:
            message = response.text[:200]
        self.cells.append(Cell(actor, action, want, code, message))
        denied = status or 403
        if allowed:
            assert code in ALLOWED, f"{actor} → {action}: expected allowed, got {code} {message}"
        else:
            assert code == denied, f"{actor} → {action}: expected denied ({denied}), got {code} {message}"

    def render(self) -> str:
        if not self.cells:
            return ""
        rows = [("actor", "action", "expected", "got")] + [
            (c.actor, c.action, c.expected, f"{c.status} {'allowed' if c.status in ALLOWED else 'denied'}")
            for c in self.cells]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [" | ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "-+-".join("-" * width for width in widths))
        return "\n".join([f"Authorization matrix: {self.title}", *lines])


def authorization_matrix(request):
    """The body of a module-scoped fixture: the module's matrix, printed (past pytest's capture) after its last test."""
    matrix = Matrix(request.module.__name__)
    yield matrix
    table = matrix.render()
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if table and reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # as capsys.disabled(): straight to the terminal
            reporter.write_line("")
            for line in table.splitlines():
                reporter.write_line(line)
