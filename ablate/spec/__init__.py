"""The one owner of names, types and checks (groups, targets, safe YAML); see the modules."""
