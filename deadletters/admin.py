"""The dead-letter admin: list, filter, read; ``requeue`` and ``ignore`` behind their own
permissions. Staff with view permission only see no actions."""

import json

from django.contrib import admin, messages
from django.db import connection
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from deadletters import services
from deadletters.models import DeadLetter
from project.admin_helpers import ReadOnlyAdminMixin, ask_reason


def distinct_values_filter(field: str, title: str):
    """A list filter offering the distinct values of an indexed column, found by a skip scan
    (one index probe per value) instead of ``SELECT DISTINCT`` over the whole table, which
    Django's default filter runs on every changelist page."""

    class DistinctValues(admin.SimpleListFilter):
        parameter_name = field

        def lookups(self, request, model_admin):
            table = DeadLetter._meta.db_table
            column = DeadLetter._meta.get_field(field).column
            sql = (
                f"WITH RECURSIVE found(v) AS (SELECT MIN({column}) FROM {table} UNION ALL "
                f"SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > found.v) "
                "FROM found WHERE found.v IS NOT NULL) "
                "SELECT v FROM found WHERE v IS NOT NULL LIMIT 500"
            )
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return [(value, value) for (value,) in cursor.fetchall()]

        def queryset(self, request, queryset):
            if self.value():
                return queryset.filter(**{field: self.value()})
            return queryset

    DistinctValues.title = title
    return DistinctValues


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    deletable = True
    list_display = ("failed_at", "task_name", "status", "exception_type", "short_message",
                    "retries", "periodic_task_name", "replayable")
    list_filter = (
        "status",
        distinct_values_filter("task_name", "task name"),
        distinct_values_filter("exception_type", "exception type"),
        "failed_at",
        "replayable",
    )
    search_fields = ("=task_id", "task_name", "exception_message")
    show_full_result_count = False  # no COUNT(*) over the whole table on a filtered page
    actions = ("requeue", "ignore")
    list_per_page = 50
    fieldsets = (
        (None, {"fields": ("task_name", "task_id", "status", "failed_at", "worker", "retries",
                           "queue", "periodic_task_name", "scheduled_slot")}),
        ("Error", {"fields": ("exception_type", "exception_message", "readable_traceback")}),
        ("Arguments", {"fields": ("readable_args", "readable_kwargs", "replayable",
                                  "not_replayable_reason")}),
        ("Decision", {"fields": ("resolved_by", "resolved_at", "resolution_note",
                                 "requeued_task_id", "requeued_from", "requeued_as_links")}),
    )

    def get_readonly_fields(self, request, obj=None):
        return [f for fs in self.fieldsets for f in fs[1]["fields"]]

    # (read-only: decisions go through the actions, which record who and why)

    def has_requeue_permission(self, request):
        return request.user.has_perm("deadletters.requeue_deadletter")

    def has_ignore_permission(self, request):
        return request.user.has_perm("deadletters.ignore_deadletter")

    @admin.display(description="message")
    def short_message(self, obj):
        return obj.exception_message[:120]

    @admin.display(description="traceback")
    def readable_traceback(self, obj):
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', obj.traceback or "-")

    @admin.display(description="args")
    def readable_args(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.args, indent=2, sort_keys=True))

    @admin.display(description="kwargs")
    def readable_kwargs(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.kwargs, indent=2, sort_keys=True))

    @admin.display(description="requeued as")
    def requeued_as_links(self, obj):
        later = list(obj.requeued_as.all())
        if not later:
            return "-"
        return format_html_join(
            ", ", '<a href="../../{}/change/">{}</a>', ((row.pk, row.task_id) for row in later))

    @admin.action(description="Requeue selected dead letters", permissions=["requeue"])
    def requeue(self, request, queryset):
        outcome = services.requeue(list(queryset), by=request.user)
        for row in outcome.requeued:
            self.log_change(request, row, f"requeued as {row.requeued_task_id}")
        if outcome.requeued:
            self.message_user(request, ngettext(
                "%d dead letter requeued.", "%d dead letters requeued.", len(outcome.requeued)
            ) % len(outcome.requeued), messages.SUCCESS)
        for row, reason in outcome.refused:
            self.message_user(request, f"{row.task_name} [{row.task_id}] not requeued, still "
                              f"pending: {reason}.", messages.ERROR)
        if outcome.already:
            self.message_user(request, ngettext(
                "%d was already decided by someone else and was left as it is.",
                "%d were already decided by someone else and were left as they are.",
                len(outcome.already)) % len(outcome.already), messages.WARNING)

    @admin.action(description="Ignore selected dead letters…", permissions=["ignore"])
    def ignore(self, request, queryset):
        reason, page = ask_reason(
            self, request, queryset, action="ignore", submit="Ignore",
            title=f"Ignore {queryset.count()} dead letter(s)",
            intro="Ignored dead letters are not replayed; they are deleted after the retention "
                  "period. Say why.",
            describe=lambda row: f"{row.task_name} [{row.task_id}]: {row.exception_type} "
                                 f"({row.status})",
        )
        if page is not None:
            return page
        done, already = services.ignore(list(queryset), by=request.user, reason=reason)
        for row in done:
            self.log_change(request, row, f"ignored: {reason}")
        self.message_user(request, ngettext(
            "%d dead letter ignored.", "%d dead letters ignored.", len(done)) % len(done),
            messages.SUCCESS)
        if already:
            self.message_user(request, ngettext(
                "%d was not pending and was left as it is.",
                "%d were not pending and were left as they are.", len(already)) % len(already),
                messages.WARNING)
        return None
