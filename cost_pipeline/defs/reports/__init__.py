"""The reports domain: tenant statements and exports as files, weekly and monthly digests."""
