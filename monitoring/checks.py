"""System checks (``manage.py check``) of the alert channels.

monitoring.E001  an entry of MONITORING_NOTIFY_URLS is not a URL Apprise can notify.
"""

from django.conf import settings
from django.core import checks


@checks.register()
def check_notify_urls(app_configs=None, **kwargs):
    urls = settings.MONITORING_NOTIFY_URLS
    if not urls:
        return []
    import apprise  # only where Apprise URLs are configured (it takes a while to import)

    from monitoring.alerts import scheme

    errors = []
    for number, url in enumerate(urls, start=1):
        if not apprise.Apprise().add(url):
            errors.append(checks.Error(
                f"MONITORING_NOTIFY_URLS entry {number} (scheme {scheme(url)!r}) is not a URL "
                "Apprise can notify.",
                hint="See https://github.com/caronc/apprise/wiki for each service's URL format.",
                id="monitoring.E001",
            ))
    return errors
