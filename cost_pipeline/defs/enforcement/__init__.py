"""The enforcement domain: the audit of what enforcement decides on."""
