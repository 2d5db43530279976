"""Promotion of MLflow registered model versions behind quality gates (`mlplatform.registry`).

    from mlplatform import registry
    report = registry.evaluate("iris", 3)                 # every gate, pass/fail with values; changes nothing
    registry.promote("iris", 3)                           # moves @champion only when every gate passes
    registry.rollback("iris")                             # back to the previous @champion
    registry.history("iris")                              # the audit trail, oldest first

The platform service does each of them (`api`), as the hub user of the server's token, for the server's
team: the gates (the catalog's `promotion`) are evaluated there, and only the platform moves the
protected aliases. The service runs this package's pure parts: `gates` (evaluation), `card` (markdown),
`facts` (MLflow reads), `policy` (which gates), `errors`.
"""

from .api import card_text, evaluate, history, promote, rollback, trail
from .errors import Conflict, Forbidden, MlflowError, NotFound, PromotionRefused, RegistryError, RollbackRefused
from .gates import summary
from .reference import load_reference_data, log_reference_data

__all__ = ["evaluate", "promote", "rollback", "history", "trail", "card_text", "summary", "RegistryError",
           "NotFound", "Conflict", "Forbidden", "PromotionRefused", "RollbackRefused", "MlflowError",
           "log_reference_data", "load_reference_data"]
