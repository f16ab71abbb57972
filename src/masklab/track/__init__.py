"""MLflow helpers."""
