"""The channels' admin: one module per area, imported here so Django's autodiscovery finds them."""
