"""Training: feature table -> holdout split, CV, LightGBM fit -> MLflow run + registered model."""
