"""The annotation server: ``activeseg serve`` (datastore, HTTP API, annotator page)."""
