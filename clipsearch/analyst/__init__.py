"""The analyst policy: what SQL from an analyst may be, and the exact text that runs."""
