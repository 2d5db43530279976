"""Image references: which images a catalog names (and where), and how a reference splits."""

from __future__ import annotations

import re

from mlplatform_core.catalog import Catalog

# registry[:port]/path:tag[@sha256:digest], the tag required (pinned images only).
IMAGE = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(?P<digest>@sha256:[a-f0-9]{64})?$"
)
EXAMPLE = "registry.example.org/mlplatform/notebook:0.1.0"


def image_problem(ref: str) -> str | None:
    """Why `ref` cannot be rendered (not a reference, no tag, :latest), or None."""
    match = IMAGE.match(ref)
    if not match:
        return f"{ref!r} is not an image reference with a tag; use e.g. {EXAMPLE!r}"
    if match.group("tag") == "latest":
        return f"{ref!r} uses the tag 'latest'; pin a version (nodes pre-pull and cache one tag), e.g. {EXAMPLE!r}"
    return None


def split_image(ref: str) -> tuple[str, str]:
    """("registry/path", "tag[@digest]"), as the z2jh chart's image.name and image.tag want it."""
    match = IMAGE.match(ref)
    if not match:
        raise ValueError(image_problem(ref))
    return match.group("name"), match.group("tag") + (match.group("digest") or "")


def workload_images(catalog: Catalog) -> dict[str, str]:
    """Images of the Kubernetes deployment besides the profiles, by catalog key."""
    images = catalog.kubernetes.images
    return {f"kubernetes.images.{key}": getattr(images, key) for key in ("hub", "serving", "serving_gpu", "spark")}


def catalog_images(catalog: Catalog) -> dict[str, list[str]]:
    """Every image the catalog names → the catalog keys naming it, in catalog order."""
    named: dict[str, list[str]] = {}
    for key, ref in workload_images(catalog).items():
        named.setdefault(ref, []).append(key)
    for slug, profile in catalog.profiles.items():
        named.setdefault(profile.image, []).append(f"profiles.{slug}.image")
    return named
