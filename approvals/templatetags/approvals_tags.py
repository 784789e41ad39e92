from django import template

from approvals.models import Review, ReviewState

register = template.Library()


@register.simple_tag
def pending_reviews_count() -> int:
    return Review.objects.filter(state=ReviewState.PENDING).count()
