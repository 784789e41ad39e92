"""The admin's login page behind the login throttle (config/throttling.py): after too many failed
passwords for a username from one address (or from one address at all), the form answers 429
without checking the password until the window ends. Django's own view does everything else."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from config.throttling import LoginThrottle


@never_cache
@csrf_protect
def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    throttle = LoginThrottle(request, request.POST.get("username", ""))
    wait = throttle.blocked_for()
    if wait is not None:
        context = {
            **admin.site.each_context(request),
            "title": "Too many failed sign-in attempts",
            "minutes": max(1, round(wait / 60)),
        }
        refused = TemplateResponse(request, "admin/login_throttled.html", context, status=429)
        refused["Retry-After"] = str(wait)
        return refused
    response = admin.site.login(request, extra_context)
    # A sign-in redirects; the form shown again (200) is a refused password or a non-staff user.
    if response.status_code != 302:
        throttle.failed()
    return response
