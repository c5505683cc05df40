"""The one owner of names, types and checks: config groups, ``_target_`` resolution, safe YAML."""
