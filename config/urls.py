from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from attachments.api import AttachmentContentView, AttachmentView, TusCreateView, TusUploadView
from config.admin_login import admin_login
from config.health import healthz
from sync.api import ActionView, MeView, PullView, PushView, RecordTypesView, RegisterView

admin.site.site_header = "Fieldsync back-office"
admin.site.site_title = "Fieldsync"

api_v1 = [
    path("devices/register", RegisterView.as_view(), name="device-register"),
    path("me", MeView.as_view(), name="me"),
    path("record-types", RecordTypesView.as_view(), name="record-types"),
    path("sync/push", PushView.as_view(), name="sync-push"),
    path("sync/pull", PullView.as_view(), name="sync-pull"),
    path("sync/actions/<uuid:action_id>", ActionView.as_view(), name="sync-action"),
    path("attachments/<uuid:attachment_id>", AttachmentView.as_view(), name="attachment"),
    path("attachments/<uuid:attachment_id>/content", AttachmentContentView.as_view(), name="attachment-content"),
    path("uploads/", TusCreateView.as_view(), name="tus-create"),
    path("uploads/<uuid:attachment_id>", TusUploadView.as_view(), name="tus-upload"),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Before the admin's own URLs, so it answers for admin:login (config/admin_login.py).
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include(api_v1)),
]

handler404 = "config.errors.json_not_found"
handler500 = "config.errors.json_server_error"
