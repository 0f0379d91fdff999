"""The metric catalogue, snapshot-to-family conversion, and the rendered /metrics bytes."""
