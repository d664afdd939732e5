"""How API token authentication appears in the OpenAPI schema (a bearer scheme)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "pp_<id>_<secret>",
            "description": "An API token of this site (tenant or platform), created on "
            "/account/tokens/. Its scope (read, store or full) narrows the user's role.",
        }
