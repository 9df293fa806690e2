"""Event tools: rescale, tile and make test sequences from radar events."""
