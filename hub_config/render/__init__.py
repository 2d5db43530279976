"""`mlplatform render`: everything a cluster needs, derived from the catalog.

checks.py (what a cluster catalog needs) → jupyterhub.py, operators.py (Helm values), teams.py,
cluster.py, prepull.py (Kubernetes objects, pure functions) → validation.py → build.py (all files in
memory, or RenderError) → writer.py (the only module that writes) ← cli.py.
"""
