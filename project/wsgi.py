import os

from django.core.wsgi import get_wsgi_application

from project.env import configuration_errors_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
with configuration_errors_exit():  # one line, not a traceback, for a bad variable
    application = get_wsgi_application()
