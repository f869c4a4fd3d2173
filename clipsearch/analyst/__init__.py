"""The analyst policy: what SQL from an analyst may be, the exact text that runs, and within what it runs
(policy.AnalystPolicy, which uses readonly's statement check)."""
