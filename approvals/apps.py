from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"

    def ready(self) -> None:
        from approvals.services import pending_proposals
        from records.schemas import set_pending_proposals_source

        # A schema change must not strand the actions waiting for review; `records` may not
        # import us, so we tell it where they are.
        set_pending_proposals_source(pending_proposals)
