"""Reading what was published to the test broker (Redis): a queue's waiting messages."""

import json


def sent_messages(broker, queue: str = "celery") -> list[dict]:
    """The messages waiting in ``queue`` as the JSON kombu wrote, newest first (kombu's Redis
    transport pushes on the left and pops on the right)."""
    return [json.loads(raw) for raw in broker.lrange(queue, 0, -1)]
