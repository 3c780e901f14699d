"""Shared admin helpers: the read-only admin behaviour, and the intermediate page of the actions
that ask for a reason first (pause / resume, ignore)."""

from django import forms
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

SHOWN = 50  # items listed on the confirmation page; the rest are counted


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        help_text="Recorded with your name.",
    )


def ask_reason(model_admin, request, queryset, *, action, title, intro, submit, describe):
    """``(reason, None)`` once the confirmation page was posted with a reason, else
    ``(None, response)`` with the page to show (first visit, or the reason missing)."""
    form = ReasonForm(request.POST if "confirm" in request.POST else None)
    if form.is_valid():
        return form.cleaned_data["reason"], None
    rows = list(queryset[: SHOWN + 1])
    select_across = request.POST.get("select_across", "0")
    return None, TemplateResponse(request, "admin/reason_action.html", {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "intro": intro,
        "submit": submit,
        "items": [describe(row) for row in rows[:SHOWN]],
        "more": max(0, queryset.count() - SHOWN) if len(rows) > SHOWN else 0,
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": select_across,
        "form": form,
        "opts": model_admin.model._meta,
        "action_name": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    })


class ReadOnlyAdminMixin:
    """Browsable, never edited by hand: records written by the system, or changed only through
    actions that say who and why. ``deletable = True`` keeps the delete permission as usual."""

    deletable = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return self.deletable and super().has_delete_permission(request, obj)
