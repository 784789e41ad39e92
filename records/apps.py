from django.apps import AppConfig


class RecordsConfig(AppConfig):
    name = "records"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from records.roles import sync_role_permissions

        # Keeps the role groups' permissions equal to ROLE_PERMISSIONS after every migrate
        # (permissions of models added later only exist after their migration ran).
        post_migrate.connect(sync_role_permissions, sender=self)
