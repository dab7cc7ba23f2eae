"""Runnable entry points that wire data_pipeline and models with Ray and MLflow."""
