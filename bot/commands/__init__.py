"""The transport-neutral command layer: a registry of commands and one dispatch for every transport."""
