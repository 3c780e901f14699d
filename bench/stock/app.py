"""``celery -A stock.app worker``: a stock Celery app on bench/stock/settings.py."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stock.settings")
app = Celery("stock")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name="bench.noop")
def noop():
    return None
