"""List pages that forgive a stale or mistyped `?page=`: the nearest page, never a 404."""

from functools import cached_property
from typing import Any

from django.core.paginator import Page, Paginator


class ClampedPagesMixin:
    """For a ListView: `?page=abc` shows the first page and `?page=999` the last, as a
    bookmark taken before rows were deleted would want (Django's default answers 404)."""

    request: Any
    page_kwarg: str

    def paginate_queryset(self, queryset: Any, page_size: int) -> tuple[Paginator, Page, Any, bool]:
        paginator = self.get_paginator(  # type: ignore[attr-defined]
            queryset,
            page_size,
            orphans=self.get_paginate_orphans(),  # type: ignore[attr-defined]
            allow_empty_first_page=self.get_allow_empty(),  # type: ignore[attr-defined]
        )
        page = paginator.get_page(self.request.GET.get(self.page_kwarg))
        return paginator, page, page.object_list, page.has_other_pages()


class CappedCountPaginator(Paginator):
    """Counts at most `count_cap` + 1 rows (`SELECT count(*)` over a LIMIT), so a search
    matching half the archive costs what one matching a thousand studies does; the page
    then says "more than 1,000" and pages up to there (narrow the search for the rest)."""

    count_cap = 1000

    @cached_property
    def count(self) -> int:
        rows: Any = self.object_list  # a QuerySet: sliced, it is counted with its LIMIT
        return int(rows[: self.count_cap + 1].count())

    @property
    def capped(self) -> bool:
        return self.count > self.count_cap
