from django.urls import path

from monitoring import views

urlpatterns = [
    path("health/live", views.live, name="health-live"),
    path("health/ready", views.ready, name="health-ready"),
    path("health/scheduler", views.scheduler, name="health-scheduler"),
    path("metrics", views.metrics, name="metrics"),
    path("monitoring/", views.dashboard, name="monitoring-dashboard"),
    path("monitoring/jobs/<int:pk>/", views.job_detail, name="monitoring-job"),
]
