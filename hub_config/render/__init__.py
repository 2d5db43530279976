"""`mlplatform render`: everything a cluster needs, derived from the catalog."""
