"""The channels' admin: one module per area, imported here so Django's autodiscovery finds them."""

from channels import (  # noqa: F401
    admin_autotags,
    admin_calls,
    admin_health,
    admin_webhooks,
    admin_wecom,
    admin_wecom_moments,
)
