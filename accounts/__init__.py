"""Users, roles and API tokens; the same tables exist in public (super-admins) and per tenant."""
