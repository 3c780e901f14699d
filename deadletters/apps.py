from django.apps import AppConfig


class DeadlettersConfig(AppConfig):
    name = "deadletters"
