"""News: sources, assessments and the offline sentiment model."""
