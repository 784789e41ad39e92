"""The attachment edge: the simple PUT, metadata, downloads and a tus 1.0.0 server. Thin views:
read headers, make one service call, shape the answer. Bodies are read from the WSGI request in
chunks by the service; nothing here touches `request.body` or `request.data`."""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import uuid
from typing import Any, TypeVar
from urllib.parse import unquote

from django.conf import settings
from django.contrib.auth.models import User
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils.http import http_date
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from attachments import files, services
from attachments.inspection import ALLOWED_TYPES
from attachments.models import Attachment, State
from attachments.services import AttachmentError, Checksum
from config.api import ErrorSerializer
from config.errors import ApiError, error_body

R = TypeVar("R", bound=HttpResponseBase)

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,checksum,termination,expiration"
TUS_CHECKSUMS = {"sha1": 20, "sha256": 32}
TUS_CONTENT_TYPE = "application/offset+octet-stream"

# Every tus request but OPTIONS carries Tus-Resumable (without it: 412).
TUS_RESUMABLE = OpenApiParameter(
    "Tus-Resumable", str, OpenApiParameter.HEADER, required=True, enum=[TUS_VERSION], description="tus version."
)
_SHA256_HEX = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
_UPLOAD_CHECKSUM = OpenApiParameter(
    "Upload-Checksum",
    {"type": "string", "pattern": "^(sha1|sha256) [A-Za-z0-9+/]+={0,2}$"},
    OpenApiParameter.HEADER,
    description="`sha1|sha256 <base64 digest>` of this request's body.",
)


class AttachmentOut(serializers.Serializer):
    id = serializers.UUIDField()
    filename = serializers.CharField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    state = serializers.ChoiceField(choices=State.choices)
    url = serializers.CharField()


def _api_error(exc: AttachmentError) -> ApiError:
    return ApiError(exc.code, exc.message, status_code=exc.status, fields=exc.fields)


# Long enough for any size worth refusing with 413 rather than 400.
_DIGITS = re.compile(r"[0-9]{1,40}")


def _header_int(raw: str) -> int | None:
    """A non-negative integer in ASCII digits, or None. int() alone also takes "1_000", an Arabic-Indic five and
    "+5", none of which is a number in an HTTP header."""
    raw = raw.strip()
    return int(raw) if _DIGITS.fullmatch(raw) else None


def _content_length(request: Request) -> int:
    raw = request.META.get("CONTENT_LENGTH", "")
    if not raw and "Transfer-Encoding" not in request.headers:
        return 0  # no Content-Length and no Transfer-Encoding: a request without a body
    length = _header_int(raw)
    if length is None:
        # Under WSGI a chunked body without Content-Length reads as empty (Django #35838).
        raise ApiError("length_required", "Send the body with a Content-Length header.", status_code=411)
    return length


def _header_text(value: str) -> str:
    """A header value that may be percent-encoded UTF-8, or raw UTF-8 that WSGI decoded as latin-1."""
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        value = value.encode("latin-1").decode("utf-8")
    return unquote(value)


def _owner(request: Request) -> tuple[User, uuid.UUID | None]:
    user = request.user
    assert isinstance(user, User)
    device = request.auth
    # request.auth is the sync Device; we take its id without importing `sync`.
    return user, getattr(device, "pk", None)


class AttachmentView(APIView):
    parser_classes: list[Any] = []

    @extend_schema(
        operation_id="attachment_put",
        summary="Upload a small file in one request (idempotent per id and sha256).",
        # The file's own type: application/octet-stream says nothing and is refused (415).
        request={content_type: OpenApiTypes.BINARY for content_type in sorted(ALLOWED_TYPES)},
        parameters=[
            OpenApiParameter("X-Sha256", _SHA256_HEX, OpenApiParameter.HEADER, required=True, description="hex sha256"),
            OpenApiParameter("X-Filename", str, OpenApiParameter.HEADER, description="percent-encoded UTF-8"),
        ],
        responses={
            201: AttachmentOut,
            200: AttachmentOut,
            **{code: ErrorSerializer for code in (400, 401, 404, 409, 411, 413, 415, 422)},
        },
    )
    def put(self, request: Request, attachment_id: uuid.UUID) -> Response:
        owner, device_id = _owner(request)
        length = _content_length(request)
        sha256 = request.headers.get("X-Sha256", "")
        if not sha256:
            raise ApiError(
                "sha256_required", "Send the file's sha256 (hex) as X-Sha256.", fields={"X-Sha256": ["Required."]}
            )
        try:
            attachment, created = services.upload_simple(
                attachment_id=attachment_id,
                owner=owner,
                device_id=device_id,
                filename=_header_text(request.headers.get("X-Filename", "")),
                content_type=request.content_type or "",
                sha256=sha256,
                length=length,
                body=request._request,
            )
        except AttachmentError as exc:
            raise _api_error(exc) from None
        return Response(services.metadata(attachment), status=201 if created else 200)

    @extend_schema(
        operation_id="attachment_get",
        summary="The server's metadata of an attachment.",
        responses={200: AttachmentOut, 401: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, attachment_id: uuid.UUID) -> Response:
        user, _ = _owner(request)
        try:
            attachment = services.readable(attachment_id=attachment_id, user=user)
        except AttachmentError as exc:
            raise _api_error(exc) from None
        return Response(services.metadata(attachment))


class AttachmentContentView(APIView):
    """The file itself, for the team of a record that references it (or its uploader before any
    record does, or staff). Filesystem storage streams it; S3 redirects to a short-lived URL."""

    authentication_classes: list[Any] = [*api_settings.DEFAULT_AUTHENTICATION_CLASSES, SessionAuthentication]

    @extend_schema(
        operation_id="attachment_content",
        summary="Download a verified attachment (a redirect to a short-lived URL on S3).",
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            302: OpenApiResponse(description="Redirect to a presigned URL"),
            **{code: ErrorSerializer for code in (401, 404, 409)},
        },
    )
    def get(self, request: Request, attachment_id: uuid.UUID) -> HttpResponseBase:
        user = request.user
        assert isinstance(user, User)
        try:
            attachment = services.readable(attachment_id=attachment_id, user=user)
        except AttachmentError as exc:
            raise _api_error(exc) from None
        if attachment.state != State.VERIFIED:
            raise ApiError(
                "attachment_not_ready",
                f"The attachment is {attachment.state}; only verified files download.",
                status_code=409,
            )
        url = files.presigned_url(
            attachment.storage_key,
            filename=attachment.filename,
            content_type=attachment.sniffed_type,
            expire=settings.ATTACHMENT_DOWNLOAD_URL_SECONDS,
        )
        if url is not None:
            response: HttpResponseBase = HttpResponseRedirect(url)
        else:
            response = FileResponse(
                files.storage().open(attachment.storage_key, "rb"),
                as_attachment=True,
                filename=attachment.filename,
                content_type=attachment.sniffed_type,
            )
        response["Cache-Control"] = "private, no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response


# --- tus 1.0.0 ------------------------------------------------------------------------------------


def _tus_headers(response: R) -> R:
    response["Tus-Resumable"] = TUS_VERSION
    return response


def _tus_error(code: str, message: str, status: int, **headers: str) -> HttpResponse:
    response = JsonResponse(error_body(code, message), status=status)
    if status == 460:
        response.reason_phrase = "Checksum Mismatch"
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return _tus_headers(response)


def _from_service(exc: AttachmentError) -> HttpResponse:
    response = JsonResponse(error_body(exc.code, exc.message, exc.fields), status=exc.status)
    if exc.status == 460:
        response.reason_phrase = "Checksum Mismatch"
    return _tus_headers(response)


def _parse_metadata(raw: str) -> dict[str, str]:
    """`key base64,key base64,key` -> {key: value}. An empty header is fine (tuspy sends one)."""
    result: dict[str, str] = {}
    for pair in raw.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, value = pair.partition(" ")
        try:
            result[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8") if value.strip() else ""
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError("invalid_metadata", f"Upload-Metadata value of {key!r} is not base64 UTF-8.") from None
    return result


def _parse_checksum(raw: str) -> Checksum | None:
    if not raw:
        return None
    algorithm, _, encoded = raw.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in TUS_CHECKSUMS:
        raise ApiError("checksum_algorithm_unsupported", f"Upload-Checksum supports {', '.join(TUS_CHECKSUMS)}.")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != TUS_CHECKSUMS[algorithm]:
        raise ApiError("invalid_checksum", "Upload-Checksum is not `<algorithm> <base64 digest>`.")
    return Checksum(algorithm, digest)


def _upload_url(request: Request, attachment_id: uuid.UUID) -> str:
    return request.build_absolute_uri(reverse("tus-upload", kwargs={"attachment_id": attachment_id}))


def _progress_headers(response: HttpResponse, attachment: Attachment) -> HttpResponse:
    response["Upload-Offset"] = str(attachment.received)
    if attachment.state == State.UPLOADING and attachment.expires_at is not None:
        response["Upload-Expires"] = http_date(attachment.expires_at.timestamp())
    return _tus_headers(response)


class TusView(APIView):
    """Common ground of the two tus endpoints: OPTIONS needs no auth and no Tus-Resumable; every
    other request needs both, and every answer (errors too) carries Tus-Resumable."""

    parser_classes: list[Any] = []

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if request.method == "OPTIONS":
            return
        super().initial(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        return _tus_headers(response)

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != TUS_VERSION:
            return _tus_error(
                "tus_version_unsupported", f"Send Tus-Resumable: {TUS_VERSION}.", 412, Tus_Version=TUS_VERSION
            )
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(exclude=True)
    def options(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        response = HttpResponse(status=204)
        response["Tus-Version"] = TUS_VERSION
        response["Tus-Extension"] = TUS_EXTENSIONS
        response["Tus-Max-Size"] = str(settings.ATTACHMENT_MAX_BYTES)
        response["Tus-Checksum-Algorithm"] = ",".join(TUS_CHECKSUMS)
        return _tus_headers(response)


class TusCreateView(TusView):
    @extend_schema(
        operation_id="tus_create",
        summary="tus creation (and creation-with-upload). Upload-Metadata: id, filename, content_type, sha256.",
        parameters=[
            TUS_RESUMABLE,
            OpenApiParameter(
                "Upload-Length",
                {"type": "integer", "minimum": 0},
                OpenApiParameter.HEADER,
                required=True,
                description="The file's size in bytes.",
            ),
            OpenApiParameter(
                "Upload-Metadata",
                str,
                OpenApiParameter.HEADER,
                description="`key base64,key base64`: id (uuid), filename, content_type, sha256 (hex).",
            ),
            _UPLOAD_CHECKSUM,
        ],
        request={TUS_CONTENT_TYPE: OpenApiTypes.BINARY},
        responses={201: None, **{code: ErrorSerializer for code in (400, 401, 409, 412, 413, 415, 460)}},
    )
    def post(self, request: Request) -> HttpResponse:
        owner, device_id = _owner(request)
        if "Upload-Defer-Length" in request.headers:
            return _tus_error("defer_length_unsupported", "Send Upload-Length; deferred length is not supported.", 400)
        raw_length = request.headers.get("Upload-Length", "")
        length = _header_int(raw_length) if not raw_length.strip().startswith("-") else -1
        if length is None:
            return _tus_error("upload_length_required", "Send Upload-Length (bytes).", 400)
        meta = _parse_metadata(request.headers.get("Upload-Metadata", ""))
        attachment_id: uuid.UUID | None = None
        if meta.get("id"):
            try:
                attachment_id = uuid.UUID(meta["id"])
            except ValueError:
                return _tus_error("invalid_metadata", "Upload-Metadata id must be a UUID.", 400)
        body_length = _content_length(request) if request.META.get("CONTENT_LENGTH") else 0
        if body_length and request.content_type != TUS_CONTENT_TYPE:
            return _tus_error("unsupported_media_type", f"An upload body must be {TUS_CONTENT_TYPE}.", 415)
        checksum = _parse_checksum(request.headers.get("Upload-Checksum", ""))
        try:
            attachment, _created = services.create_upload(
                attachment_id=attachment_id,
                owner=owner,
                device_id=device_id,
                length=length,
                filename=meta.get("filename", "") or meta.get("name", ""),
                content_type=meta.get("content_type", "") or meta.get("filetype", ""),
                sha256=meta.get("sha256", ""),
            )
            if attachment.state == State.UPLOADING and attachment.received == 0 and (body_length or length == 0):
                attachment = services.append_chunk(
                    attachment_id=attachment.pk,
                    owner=owner,
                    offset=0,
                    length=body_length,
                    checksum=checksum,
                    body=request._request,
                )
        except AttachmentError as exc:
            return _from_service(exc)
        response = HttpResponse(status=201)
        response["Location"] = _upload_url(request, attachment.pk)
        return _progress_headers(response, attachment)


class TusUploadView(TusView):
    @extend_schema(
        operation_id="tus_head",
        summary="tus: the upload's offset.",
        parameters=[TUS_RESUMABLE],
        request=None,
        responses={200: None, 404: None, 410: None, 412: None},
    )
    def head(self, request: Request, attachment_id: uuid.UUID) -> HttpResponse:
        owner, _ = _owner(request)
        try:
            attachment = services.upload_for(attachment_id=attachment_id, owner=owner)
        except AttachmentError as exc:
            return _from_service(exc)
        response = HttpResponse(status=200)
        response["Upload-Length"] = str(attachment.declared_size)
        response["Cache-Control"] = "no-store"
        return _progress_headers(response, attachment)

    @extend_schema(
        operation_id="tus_patch",
        summary="tus: append a chunk at Upload-Offset (Upload-Checksum: sha1|sha256 <base64>).",
        parameters=[
            TUS_RESUMABLE,
            OpenApiParameter(
                "Upload-Offset",
                {"type": "integer", "minimum": 0},
                OpenApiParameter.HEADER,
                required=True,
                description="Where this chunk starts.",
            ),
            _UPLOAD_CHECKSUM,
        ],
        request={TUS_CONTENT_TYPE: OpenApiTypes.BINARY},
        responses={
            204: None,
            **{code: ErrorSerializer for code in (400, 404, 409, 410, 411, 412, 413, 415, 422, 423, 460)},
        },
    )
    def patch(self, request: Request, attachment_id: uuid.UUID) -> HttpResponse:
        owner, _ = _owner(request)
        if request.content_type != TUS_CONTENT_TYPE:
            return _tus_error("unsupported_media_type", f"PATCH bodies must be {TUS_CONTENT_TYPE}.", 415)
        offset = _header_int(request.headers.get("Upload-Offset", ""))
        if offset is None:
            return _tus_error("upload_offset_required", "Send Upload-Offset (bytes).", 400)
        length = _content_length(request)
        checksum = _parse_checksum(request.headers.get("Upload-Checksum", ""))
        try:
            attachment = services.append_chunk(
                attachment_id=attachment_id,
                owner=owner,
                offset=offset,
                length=length,
                checksum=checksum,
                body=request._request,
            )
        except AttachmentError as exc:
            return _from_service(exc)
        if attachment.state == State.REJECTED:
            response: HttpResponse = JsonResponse(
                error_body(attachment.reject_reason, attachment.reject_detail), status=422
            )
        else:
            response = HttpResponse(status=204)
        return _progress_headers(response, attachment)

    @extend_schema(
        operation_id="tus_delete",
        summary="tus termination.",
        parameters=[TUS_RESUMABLE],
        request=None,
        responses={204: None, **{code: ErrorSerializer for code in (404, 409, 412, 423)}},
    )
    def delete(self, request: Request, attachment_id: uuid.UUID) -> HttpResponse:
        owner, _ = _owner(request)
        try:
            services.terminate_upload(attachment_id=attachment_id, owner=owner)
        except AttachmentError as exc:
            return _from_service(exc)
        return _tus_headers(HttpResponse(status=204))
