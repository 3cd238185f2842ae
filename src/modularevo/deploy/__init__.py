"""Deploying modules: structured extraction into smaller models, sparse storage and inference."""

from modularevo.deploy.extract import extract_module, plan_extraction, save_extracted

__all__ = ["extract_module", "plan_extraction", "save_extracted"]
