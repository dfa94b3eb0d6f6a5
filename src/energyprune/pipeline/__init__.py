"""Pipeline: data, models, fine-tuning, evaluation and reports."""
