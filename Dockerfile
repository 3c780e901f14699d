# One image for every role (web, worker, beat, migrate, flower); the compose file picks the command.
# Built from the lock file: `docker compose build`.

FROM python:3.11-slim AS build
ENV UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.9.*
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH \
    DJANGO_STATIC_ROOT=/app/static VAR_DIR=/app/var
# A fixed uid/gid (10001), so Kubernetes can check runAsNonRoot (deploy/kubernetes/).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=app:app . .
# Static files are collected at build time (no database or broker is needed for that).
RUN DJANGO_SECRET_KEY=build-only-not-a-secret-0123456789-abcdefghijklmnopqrstuvwxyz \
    python manage.py collectstatic --noinput -v0 \
 && mkdir -p /app/var && chown -R app:app /app/var /app/static
USER app
EXPOSE 8000
CMD ["gunicorn", "project.wsgi", "--bind", "0.0.0.0:8000"]
