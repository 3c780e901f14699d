"""The Redis broker transport: kombu's, with one fix so a worker survives a Redis restart.

Found by the fault suite (tests/faults) and reproduced on its own in
``tests/e2e/test_broker_restart.py``: with kombu 5.7.0 and Celery 5.7.0, a worker that has a
late-acknowledged task in flight when Redis goes away exits with "Unrecoverable error:
AttributeError("'NoneType' object has no attribute 'hostname'")" instead of reconnecting.

What happens: on the connection error the consumer first calls ``Connection.collect()``, then
``Connection.close()``. In ``collect()``, closing the channel reads the pending BRPOP reply
(kombu's guard against losing a popped message); Redis is gone, so that read raises and the
channel stays half-closed. ``collect()`` then detaches the transport from its connection
(``transport.client = None``). ``close()`` closes the same channel again; this time it gets as far
as giving the unacknowledged messages back, which needs a new connection pool, which
``Channel._connparams()`` builds from ``transport.client``: ``None``. The AttributeError is not a
connection error, so nothing catches it and the worker stops.

The fix: a channel remembers the connection parameters it last built and uses them once its
transport has been detached. Giving the messages back then either works (Redis is back) or fails
with a connection error, which kombu's close path does catch; either way the worker goes on to
reconnect. Messages that could not be given back stay in Redis's unacked set, from where the
visibility timeout returns them to the queue: nothing is lost either way.

``use_for_redis_urls()`` (called by ``project/celery.py`` before the app exists) points kombu's
``redis`` and ``rediss`` schemes at this transport. Naming the class in ``CELERY_BROKER_TRANSPORT``
instead would work too, but kombu would then print the broker URL as
``project.broker:Transport://…``, which Flower's broker page cannot read.
"""

import structlog
from celery import bootsteps
from celery.worker import consumer as celery_consumer
from celery.worker.state import active_requests, reserved_requests, scheduled_requests
from kombu.transport import TRANSPORT_ALIASES, redis

log = structlog.get_logger(__name__)


class Channel(redis.Channel):
    def _connparams(self, asynchronous=False):
        remembered = self.__dict__.setdefault("_remembered_connparams", {})
        if self.connection.client is None and asynchronous in remembered:
            # Detached by Connection.collect(): connect as this channel did before.
            return dict(remembered[asynchronous])
        params = super()._connparams(asynchronous=asynchronous)
        remembered[asynchronous] = dict(params)
        return params


class Transport(redis.Transport):
    Channel = Channel


def use_for_redis_urls() -> None:
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"


# --- messages a worker held when the broker went away -------------------------------------------
# A worker holds messages it has not started: prefetched ones, and ones with an ETA (a retry's
# countdown). When the connection drops, Celery forgets them ("they can't be acked anyway, as a
# delivery tag is specific to the current channel") and kombu's attempt to give them back on close
# fails, since Redis is the thing that went away. They stay in Redis's unacked set until the
# visibility timeout (an hour by default) returns them to their queue. So the worker remembers
# their delivery tags as it drops them and, connected again, gives them back to their queues at
# once, through kombu's own restore (one Redis transaction per message, a no-op for one already
# given back). Prefetching is also off (``CELERY_WORKER_DISABLE_PREFETCH``), so normally only ETA
# messages are held at all.


class Consumer(celery_consumer.Consumer):
    """Celery's consumer, remembering the messages it drops on a lost connection."""

    def on_close(self):
        held = self.__dict__.setdefault("held_on_close", {})  # delivery tag -> task id
        for request in (*reserved_requests, *scheduled_requests):
            tag = getattr(request.message, "delivery_tag", None)
            if request not in active_requests and not request.acknowledged and tag:
                held[tag] = request.id
        super().on_close()


class GiveBackHeld(bootsteps.StartStopStep):
    """After (re)connecting: give the messages dropped with the old connection back to their
    queues, so they run now rather than after the visibility timeout."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c):
        held = getattr(c, "held_on_close", None)
        if not held:
            return
        restore = getattr(c.task_consumer.channel.qos, "restore_by_tag", None)
        if restore is None:  # a transport without an unacked set (the filesystem broker)
            held.clear()
            return
        given = 0
        for tag in list(held):
            restore(tag)  # a connection error here: the worker reconnects and tries again
            held.pop(tag)
            given += 1
        log.warning("broker.held_messages_given_back", count=given)
