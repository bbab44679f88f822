"""The transactional outbox (docs/OUTBOX.md): producers insert rows into
``notification_outbox`` in their own transaction; each worker's consumer
(consumer.py) claims committed rows, stores them as notifications and emits them.
PostgreSQL only."""
