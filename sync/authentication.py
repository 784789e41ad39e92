from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from sync.models import Device
from sync.services import authenticate_token, touch_device


class DeviceTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <device token>`; request.auth is the Device."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[User, Device] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.", code="invalid_token")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed token.", code="invalid_token") from None
        device = authenticate_token(token)
        if device is None:
            raise exceptions.AuthenticationFailed("Unknown device token.", code="invalid_token")
        if device.is_revoked:
            raise exceptions.AuthenticationFailed("This device has been revoked.", code="device_revoked")
        if not device.user.is_active:
            raise exceptions.AuthenticationFailed("This user is inactive.", code="user_inactive")
        touch_device(device)
        return device.user, device

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="fieldsync"'


class DeviceTokenScheme(OpenApiAuthenticationExtension):
    target_class = "sync.authentication.DeviceTokenAuthentication"
    name = "deviceToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "The token returned by device registration."}
