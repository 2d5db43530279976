"""The suite's fixed ports (MLPLATFORM_TEST_PORT_BASE's default plus each module's offset, and the 200 ports of a
Ray head started there) stay below Linux's ephemeral range, where the kernel hands ports to outgoing connections
and Ray picks some of its own: CI saw the Git server's port taken there ("Address already in use")."""

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
EPHEMERAL_START = 32768  # /proc/sys/net/ipv4/ip_local_port_range's default lower end
RAY_PORTS = 200  # a head at port P uses P … P + 199 (serving/ray_head.py)
DEFAULT_BASE = re.compile(r'MLPLATFORM_TEST_PORT_BASE", "(\d+)"\)\)')
MODULE_PORT = re.compile(r'MLPLATFORM_TEST_PORT_BASE", "(\d+)"\)\)\s*\+\s*(\d+)')
SESSION_PORT = re.compile(r"\bBASE \+ (\d+)")


def test_every_default_test_port_is_below_the_ephemeral_range():
    base = int(DEFAULT_BASE.search((TESTS / "conftest.py").read_text())[1])
    ports = {}
    for path in TESTS.rglob("*.py"):
        text = path.read_text()
        for default, offset in MODULE_PORT.findall(text):
            ports[f"{path.relative_to(TESTS)}: {default} + {offset}"] = int(default) + int(offset)
        for offset in SESSION_PORT.findall(text):
            ports[f"{path.relative_to(TESTS)}: BASE + {offset}"] = base + int(offset)
    assert len(ports) > 20, ports  # the patterns still find the suite's ports
    assert {name: port for name, port in ports.items() if port + RAY_PORTS > EPHEMERAL_START} == {}
