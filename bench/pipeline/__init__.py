"""The pipeline: a suite becomes a plan of artifacts, built by an executor, recorded by the runner."""
