"""Which gates apply: the `promotion` section of the platform catalog, or one passed by the caller."""

from __future__ import annotations

import os
from collections.abc import Mapping

from mlplatform_core.catalog import Catalog, CatalogError, Promotion, cached_catalog
from pydantic import ValidationError

from ..environment import read_environment
from .errors import RegistryError


def resolve_policy(catalog: Catalog | str | os.PathLike | None = None,
                   promotion: Promotion | Mapping | None = None,
                   environ: Mapping[str, str] | None = None) -> Promotion:
    """The promotion policy, from (first that is given) `promotion`, `catalog`, or $MLPLATFORM_CATALOG.

    `promotion` may be a `Promotion` or a mapping of the catalog's `promotion` keys; `catalog` a loaded
    `Catalog` or the path of a catalog file. Outside the platform, with neither given, there is no policy
    to apply: promoting without gates by accident is worse than an error.
    """
    if promotion is not None and catalog is not None:
        raise RegistryError("pass either catalog= or promotion=, not both")
    if promotion is not None:
        if isinstance(promotion, Promotion):
            return promotion
        try:
            return Promotion.model_validate(dict(promotion))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'promotion'}: {err['msg']}" for err in e.errors())
            raise RegistryError(f"invalid promotion policy: {problems}; allowed keys: "
                                f"{', '.join(Promotion.model_fields)}") from None
    if catalog is None:
        catalog = read_environment(environ).catalog_path
        if not catalog:
            raise RegistryError("no promotion policy: MLPLATFORM_CATALOG is not set (it is on servers the "
                                "platform starts); pass catalog= (a Catalog or a catalog file) or promotion=")
    if not isinstance(catalog, Catalog):
        try:
            catalog = cached_catalog(catalog)
        except CatalogError as e:
            raise RegistryError(str(e)) from None
    return catalog.promotion
