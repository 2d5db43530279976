"""The images the project builds under images/, as the catalog names them unless it says otherwise."""

from __future__ import annotations

HUB = "mlplatform/hub:0.1.0"
SERVING = "mlplatform/ray:0.1.0"  # RayService head and CPU workers
SERVING_GPU = "mlplatform/ray-gpu:0.1.0"  # RayService workers with GPUs
SPARK = "mlplatform/spark:0.1.0"  # SparkApplication driver and executors (hadoop-aws included)
