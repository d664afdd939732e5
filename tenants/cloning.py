"""Copy the migrated template schema into a new tenant schema with plain DDL.

The copy is `public.portal_clone_schema(template, new)`, a function the owner role defines
(tenants/migrations/0007_owner_functions.py) and runs with its own rights: the application
role may create tenants but owns nothing, so it could not create their tables itself
(portal/dbroles.py). It is installed once by a migration, unlike django-tenants' `CloneSchema`,
which re-installs its 4,600-line plpgsql `clone_schema` before every clone. On a connection
that lives on (a worker, a script, web workers with persistent connections) each re-install
left compiled functions and thousands of cached plans behind, so every tenant took longer than
the last (0.34 s rising to 2.9 s over 50; measured in BENCHMARKS.md with
pg_backend_memory_contexts). It also gave unique constraints PostgreSQL's default names, which
breaks later migrations that drop them by name. The function reads only the template's own
catalogue rows:

1. `CREATE TABLE new.t (LIKE template.t INCLUDING ALL)` for every table (columns, defaults,
   identity, NOT NULL and CHECK constraints, indexes, primary and unique keys);
2. the template's rows (migration records, content types, permissions) and identity values;
3. foreign keys, functions and triggers, printed by PostgreSQL with the template as the
   search path, so that they come out unqualified and bind to the new schema;
4. the names of constraints and indexes, which `LIKE` regenerates, set back to the
   template's (Django drops them by name in later migrations);
5. the calling role's grants on the new schema (`portal_app_grants`).

A test compares the catalogue of a cloned schema with that of a freshly migrated one.
"""

import re

from django.db import connection

_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def clone_schema(template: str, new: str) -> None:
    """Create `new` as a structural and data copy of `template`, in the caller's transaction.

    Both names are tenant schema names (`[a-z0-9_]`); the function checks them again.
    """
    if not (_PLAIN_NAME.match(template) and _PLAIN_NAME.match(new)):
        raise ValueError("schema names must be plain lowercase identifiers")
    with connection.cursor() as cursor:
        cursor.execute("SELECT public.portal_clone_schema(%s, %s)", [template, new])
