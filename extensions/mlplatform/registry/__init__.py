"""Promotion of MLflow registered model versions behind quality gates (`mlplatform.registry`).

    from mlplatform import registry
    report = registry.evaluate("iris", 3)                 # every gate, pass/fail with values; changes nothing
    registry.promote("iris", 3, user="alice")             # moves @champion only when every gate passes
    registry.rollback("iris", user="alice")               # back to the previous @champion
    registry.history("iris")                              # the audit trail, oldest first

Gates come from the catalog's `promotion` section ($MLPLATFORM_CATALOG, or `catalog=` / `promotion=`);
MLflow from MLFLOW_TRACKING_URI (or `client=` / `tracking_uri=`). Aliases and version tags only, never
stages. Files: `gates` (pure evaluation), `card` (pure markdown), `audit` (pure tag encoding and trail
replay), `policy` (which gates), `facts` (MLflow reads), `api` (the functions above; the only writer).
"""

from .api import evaluate, history, promote, rollback
from .errors import Conflict, MlflowError, NotFound, PromotionRefused, RegistryError, RollbackRefused
from .gates import summary

__all__ = ["evaluate", "promote", "rollback", "history", "summary", "RegistryError", "NotFound", "Conflict",
           "PromotionRefused", "RollbackRefused", "MlflowError"]
