import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create a local superuser 'admin' with a random password if no superuser exists, and "
        "print how to log in. The password is kept in var/admin-password (git-ignored) so later "
        "runs can print it again. For local use: in production create users with createsuperuser."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000/admin/", help="Admin URL to print."
        )

    def handle(self, *args, url, **options):
        User = get_user_model()
        password_file = settings.VAR_DIR / "admin-password"
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@example.invalid", password)
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            self.stdout.write(f"Created superuser 'admin'. Log in at {url} as admin / {password}")
        elif password_file.exists():
            password = password_file.read_text().strip()
            self.stdout.write(f"Log in at {url} as admin / {password}")
        else:
            self.stdout.write(f"Log in at {url} with your existing superuser.")
