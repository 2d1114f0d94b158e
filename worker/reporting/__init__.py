"""The corpus report: its embeddings, charts and HTML page."""
