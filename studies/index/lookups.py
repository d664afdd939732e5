"""SQL LIKE lookups for DICOM wildcard matching, in forms a btree index can serve.

`upper_like` compares `UPPER(column) LIKE UPPER(pattern)`, which the study table's
`text_pattern_ops` index on `UPPER(patient_name)` answers for patterns with a literal
prefix ("DOE*"); Django's own `iregex`/`icontains` cannot use an index at all.
"""

from typing import Any

from django.db.models import CharField, Lookup


class Like(Lookup):
    """`column LIKE pattern`; the pattern is already escaped (backslash, PostgreSQL's default)."""

    lookup_name = "like"

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs}::text LIKE {rhs}", [*lhs_params, *rhs_params]


class UpperLike(Lookup):
    """`UPPER(column) LIKE UPPER(pattern)`: case-insensitive, as person names are matched."""

    lookup_name = "upper_like"

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"UPPER({lhs}::text) LIKE UPPER({rhs})", [*lhs_params, *rhs_params]


def register() -> None:
    CharField.register_lookup(Like)
    CharField.register_lookup(UpperLike)
