"""What a spawner reads of JupyterHub's user, for spawners made without a hub."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Group:
    name: str


@dataclass
class User:
    name: str
    groups: list[Group] = field(default_factory=lambda: [Group("team-vision")])
    id: int = 1
    url: str = "/user/"
