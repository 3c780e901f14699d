from django.contrib import admin

from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard


@admin.register(Coupon)
class CouponAdmin(admin.ModelAdmin):
    list_display = ("code", "status", "expires_at", "expired_at", "created_at")
    list_filter = ("status", "expires_at", "expired_at")
    search_fields = ("code",)
    date_hierarchy = "expires_at"
    readonly_fields = ("expired_at", "created_at")
    show_full_result_count = False  # no COUNT(*) over a large table on every page


@admin.register(PaymentCard)
class PaymentCardAdmin(admin.ModelAdmin):
    list_display = (
        "customer_email", "brand", "last4", "exp_month", "exp_year", "valid_until",
        "expiry_flagged_at",
    )
    list_filter = ("brand", "exp_year", ("expiry_flagged_at", admin.EmptyFieldListFilter))
    search_fields = ("customer_email", "=last4")
    readonly_fields = ("expiry_flagged_at", "created_at", "valid_until")
    show_full_result_count = False


@admin.register(CheckoutSession)
class CheckoutSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "customer_email", "status", "created_at", "updated_at")
    list_filter = ("status", "updated_at")
    search_fields = ("customer_email", "=id")
    date_hierarchy = "updated_at"
    readonly_fields = ("created_at", "updated_at")
    show_full_result_count = False
