from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "sync"
    verbose_name = "Devices and sync"

    def ready(self) -> None:
        from records.schemas import set_device_uses_source
        from sync.services import device_schema_uses

        # The record type's admin page lists devices by schema version; `records` may not
        # import us, so we tell it how to ask.
        set_device_uses_source(device_schema_uses)
