"""What the suites share: real processes (celery workers and beats, own Redis servers, free
ports), the scenario steps (run in-process or in a subprocess), the probe app, broker helpers."""
