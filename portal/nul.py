"""Requests whose path or query string holds a NUL byte are refused before any view runs.

No address of the portal has a use for one, PostgreSQL refuses NUL in text (a lookup with it
would fail as a server error), and a NUL that reached a file name or a log line would cut it
short. Form fields are checked by Django's form fields; bodies are the views' to parse.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

REASON = "A NUL byte (%00) in the address is not accepted."


class RefuseNulMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            "\x00" in request.path
            or "\x00" in request.META.get("QUERY_STRING", "")
            or any(
                "\x00" in key or any("\x00" in value for value in values)
                for key, values in request.GET.lists()
            )
        ):
            return JsonResponse({"detail": REASON}, status=400)
        return self.get_response(request)
