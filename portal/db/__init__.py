"""The portal's database backend: django-tenants' with a budget of schemas per connection."""
