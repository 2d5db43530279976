"""ipywidgets for the notebook golden paths: ServeModel, SubmitSparkJob, PromoteModel."""
