from django.apps import AppConfig


class RecordsConfig(AppConfig):
    name = "records"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from records.roles import sync_role_permissions

        # Keeps the role groups' permissions equal to ROLE_PERMISSIONS after every migrate.
        # No sender: it must also run after the apps that come later (approvals, sync), whose
        # permissions only exist once their own post_migrate has created them.
        post_migrate.connect(sync_role_permissions, dispatch_uid="fieldsync-role-permissions")

        from attachments.services import set_team_membership_check
        from records.services import user_in_any_team

        # Downloads are for the teams of the records that reference a file; `attachments` may
        # not import us, so we tell it how to ask.
        set_team_membership_check(user_in_any_team)
