"""The one owner of names, types and checks: config groups and families (groups.py), ``_target_``
resolution (targets.py), safe YAML (yaml.py)."""
