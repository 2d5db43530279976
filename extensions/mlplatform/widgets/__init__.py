"""ipywidgets for the notebook golden paths: ServeModel, SubmitSparkJob, PromoteModel, Rollout.

    from mlplatform.widgets import ServeModel, SubmitSparkJob, PromoteModel, Rollout
    ServeModel()        # a registered MLflow model → Ray Serve: deploy, live status, endpoint, test request
    SubmitSparkJob()    # a PySpark application: submit, state, Spark UI link, driver log, cancel
    PromoteModel()      # gates of a model version, then promote / roll back the alias; the audit trail
    Rollout()           # a candidate version beside the champion: shadow → canary → champion, live gates and charts

Each is a VBox over the Python API (`mlplatform.serving`, `.serving.rollouts`, `.spark`, `.registry`): fields are checked as
they are typed by the API's own validators, errors show as red lines, and slow calls run in background
threads (`close()` stops their polls).
"""

from .promote_model import PromoteModel
from .rollout import Rollout
from .serve_model import ServeModel
from .spark_job import SubmitSparkJob

__all__ = ["PromoteModel", "Rollout", "ServeModel", "SubmitSparkJob"]
