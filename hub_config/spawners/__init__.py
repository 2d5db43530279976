"""Spawners of the bundle: one profile + quota pipeline, one spawner per backend."""
