"""mlplatform_core: what the hub side (`hub_config`) and the notebook side (`mlplatform`) share.

The catalog (schema, load, cache), the environment contract (the hub writes it, the notebook reads
it), Kubernetes names and labels, quantities, timestamps, default images and the notebook's AWS
config. It imports neither side, and both import it.
"""
