"""The scans of a config, the scheduler that runs them, and the store of their last results."""
