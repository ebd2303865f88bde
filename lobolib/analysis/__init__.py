"""Analysis: metrics, tables and figures built from the per-item records."""
